"""An asyncio MQTT 3.1.1 client for the board: one object per broker, owning its connection.

Like mqtt_as, one state machine owns connect, keepalive, reconnect with capped exponential
backoff and jitter; the application sees `is_up`, `publish()` and the `on_message` callback.
Failure modes it survives (each drops the connection and reconnects, never crashes the loop):
- broker down or refusing (CONNACK code != 0): backoff 0.5 s doubling to `max_backoff_s`, jittered;
- dead link: no answer within keepalive/2 to the PINGREQ sent after keepalive of silence;
- the network going away (the hardware layer's `link_up()` turning false);
- malformed or unexpected packets from the broker (bad lengths, packet types a broker never
  sends, anything but a PUBLISH beyond `max_packet_bytes`): MQTTError with the reason, reconnect;
- a PUBLISH beyond `max_packet_bytes`: read past without holding it, acknowledged (a broker would
  otherwise send it again on every connection), counted in `oversized` and logged;
- a publish whose PUBACK does not come within `ack_timeout_s`: MQTTError to the caller, who keeps
  the message (the outbox retries it, with DUP set, on the next connection).

The host agent runs this same client on CPython for its ingest connection, with `manual_ack`:
each message comes with a token, and the PUBACK goes only when `ack(tokens)` is called, after the
message is committed. A token of an earlier connection is not acknowledged on a later one: the
broker sends those messages again and the agent recognises them as duplicates.
"""

import asyncio
import random
import struct
import time

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x80
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0
PUBACK_2 = bytes((PUBACK, 2))


class MQTTError(Exception):
    """A connection-level failure; the client reconnects."""


def _string(value):
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return struct.pack(">H", len(raw)) + raw


def _remaining_length(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def connect_packet(client_id, keepalive_s, clean, will=None, user=None, password=None):
    """Return the bytes of a CONNECT packet; `will` is (topic, payload, qos, retain)."""
    flags = 0x02 if clean else 0
    payload = _string(client_id)
    if will:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _string(topic) + _string(message)
    if user is not None:
        flags |= 0x80
        payload += _string(user)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    variable = _string("MQTT") + bytes((4, flags)) + struct.pack(">H", keepalive_s)
    body = variable + payload
    return bytes((CONNECT,)) + _remaining_length(len(body)) + body


def publish_packet(topic, payload, qos, retain, packet_id, dup=False):
    """Return the bytes of a PUBLISH packet."""
    header = PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _string(topic) + (struct.pack(">H", packet_id) if qos else b"") + bytes(payload)
    return bytes((header,)) + _remaining_length(len(body)) + body


PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
PEM_END = "-----END CERTIFICATE-----"


def der_from_pem(text):
    """The DER bytes of the one CA certificate in PEM `text` (MicroPython's ssl takes DER).

    Raise ValueError when `text` is not one PEM certificate.
    """
    import binascii

    start = text.find(PEM_BEGIN)
    end = text.find(PEM_END)
    if start < 0 or end < start:
        raise ValueError("ca must be a PEM certificate (-----BEGIN CERTIFICATE----- ...)")
    body = "".join(text[start + len(PEM_BEGIN) : end].split())
    try:
        der = binascii.a2b_base64(body)
    except ValueError:
        raise ValueError("ca: the PEM certificate is not valid base64")
    if len(der) < 64 or der[0] != 0x30:
        raise ValueError("ca: the PEM certificate does not hold a DER certificate")
    return der


class Broker:
    """Where and how to connect: validated once, used by MQTTClient."""

    def __init__(self, host, port=1883, user=None, password=None, tls=False, ca=None):
        if not isinstance(host, str) or not host:
            raise ValueError("broker host must be a non-empty string")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError("broker port must be 1..65535")
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        if tls and not ca:
            # MicroPython's ssl verifies nothing unless told to, and a board has no CA store
            raise ValueError("tls needs the broker's CA certificate (ca, PEM)")
        self.tls = tls
        self.ca = der_from_pem(ca) if ca else None

    def key(self):
        return "%s:%d" % (self.host, self.port)


def _ignored(topic, size):
    """The default on_oversized: the count and the log line are enough on a board."""


async def _nothing():
    """The default on_up: nothing to do after a (re)connect."""


class MQTTClient:
    """One connection to one broker, kept up by `run()`."""

    def __init__(
        self,
        broker,
        client_id,
        on_message=None,
        will=None,
        keepalive_s=30,
        clean=True,
        subscriptions=(),
        max_packet_bytes=8192,
        ack_timeout_s=5.0,
        max_backoff_s=30.0,
        log=None,
        link_up=None,
        manual_ack=False,
        read_chunk=512,
    ):
        self.broker = broker
        self.client_id = client_id
        self.on_message = on_message
        self.will = will
        self.keepalive_s = keepalive_s
        self.clean = clean
        self.subscriptions = list(subscriptions)
        self.max_packet_bytes = max_packet_bytes
        self.ack_timeout_s = ack_timeout_s
        self.max_backoff_s = max_backoff_s
        self.log = log or (lambda text: None)
        self.link_up = link_up  # the hardware layer's "is the network there?" (Wi-Fi, or the sim's cut)
        # on_message(topic, payload) awaited, then PUBACK; with manual_ack on_message(topic,
        # payload, token), and the PUBACK waits for ack([token, ...]) (token None: QoS 0)
        self.manual_ack = manual_ack
        self.read_chunk = read_chunk  # bytes per read: small on a board, large for the agent's stream
        self.oversized = 0
        self.on_oversized = _ignored  # called with (topic bytes, payload size) for each PUBLISH read past
        self._last_rx = 0
        self.is_up = False
        self.on_up = _nothing  # coroutine function called after each (re)connect
        self.connects = 0
        self.errors = 0
        self._reader = None
        self._writer = None
        self._buffer = b""  # read from the broker, parsed up to _position
        self._position = 0
        self._next_id = 0
        self._pending = {}  # packet id -> asyncio.Event set by PUBACK
        self._stopped = False
        self._drop_reason = None  # set by reconnect(): the serving loop drops the link
        self._up_event = asyncio.Event()

    async def wait_up(self, timeout_s):
        """Wait until connected; raise asyncio.TimeoutError after `timeout_s`."""
        await asyncio.wait_for(self._up_event.wait(), timeout_s)

    async def run(self):
        """Connect, serve, and reconnect forever (until stop())."""
        backoff = min(0.5, self.max_backoff_s)
        while not self._stopped:
            try:
                await self._connect()
                backoff = min(0.5, self.max_backoff_s)
                if self.on_up:
                    asyncio.create_task(self.on_up())
                await self._serve()
            except (OSError, MQTTError, EOFError, asyncio.TimeoutError, ValueError, IndexError) as error:
                self.errors += 1
                self.log("mqtt %s: %s %s" % (self.broker.key(), type(error).__name__, error))
            self._drop()
            if self._stopped:
                break
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self.max_backoff_s)

    def reconnect(self, reason):
        """Drop the current connection (the state machine then reconnects with backoff)."""
        self._drop_reason = reason

    def stop(self):
        """Stop reconnecting and close the connection."""
        self._stopped = True
        self._drop()

    def _drop(self):
        was_up = self.is_up
        self.is_up = False
        self._up_event = asyncio.Event()
        writer = self._writer
        self._reader = self._writer = None
        if writer:
            try:
                writer.close()
                # MicroPython's Stream.close() does nothing (only wait_closed() closes the socket):
                # close the socket itself, or every reconnect would leak one.
                sock = getattr(writer, "s", None)
                if sock is not None:
                    sock.close()
            except OSError:
                pass
        for event in self._pending.values():
            event.set()  # wake waiters: they see is_up False and fail
        if was_up:
            self.log("mqtt %s: down" % self.broker.key())

    async def _connect(self):
        if self.link_up and not self.link_up():
            raise MQTTError("network down")
        if self.broker.tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            # MicroPython's default is CERT_NONE even for a client: require the chain and the name
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=self.broker.ca)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.broker.host, self.broker.port, ssl=context), 10
            )
        else:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.broker.host, self.broker.port), 10
            )
        self._reader, self._writer = reader, writer
        self._buffer, self._position = b"", 0
        # The will may be a function: a signed "offline" status must be fresh for each connection.
        will = self.will() if callable(self.will) else self.will
        writer.write(
            connect_packet(
                self.client_id, self.keepalive_s, self.clean, will, self.broker.user, self.broker.password
            )
        )
        await writer.drain()
        header, body = await asyncio.wait_for(self._next_packet(), 10)
        kind = header & 0xF0
        if kind != CONNACK or len(body) != 2:
            raise MQTTError("expected CONNACK, got packet type 0x%02x" % kind)
        if body[1] != 0:
            raise MQTTError("broker refused the connection (CONNACK code %d)" % body[1])
        for topic, qos in self.subscriptions:
            self._next_id = self._next_id % 65535 + 1
            body = struct.pack(">H", self._next_id) + _string(topic) + bytes((qos,))
            writer.write(bytes((SUBSCRIBE | 0x02,)) + _remaining_length(len(body)) + body)
        await writer.drain()
        self._last_rx = time.time()
        self.is_up = True
        self.connects += 1
        self._up_event.set()
        self.log("mqtt %s: up" % self.broker.key())

    def _link(self):
        """The open connection's (reader, writer), or MQTTError when there is none."""
        if self._reader is None or self._writer is None:
            raise MQTTError("not connected")
        return self._reader, self._writer

    async def _send(self, packet):
        writer = self._link()[1]
        writer.write(packet)
        await writer.drain()

    def _parse(self):
        """The next packet in the buffer as (first byte, body, remaining length), or None until
        all of it has arrived; body None: a PUBLISH beyond max_packet_bytes, to read past."""
        buffer, start = self._buffer, self._position
        end = len(buffer)
        index = start + 1
        length = 0
        for shift in (0, 7, 14, 21):
            if index >= end:
                return None
            byte = buffer[index]
            index += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        else:
            raise MQTTError("remaining length longer than 4 bytes")
        header = buffer[start]
        if length > self.max_packet_bytes:
            if header & 0xF0 != PUBLISH:
                raise MQTTError(
                    "packet of %d bytes exceeds the %d-byte limit" % (length, self.max_packet_bytes)
                )
            self._position = index
            return header, None, length
        if end - index < length:
            return None
        self._position = index + length
        return header, buffer[index : index + length], length

    async def _fill(self):
        """Read what the broker has sent (up to read_chunk bytes) behind what is left unparsed."""
        chunk = await self._link()[0].read(self.read_chunk)
        if not chunk:
            raise EOFError("connection closed by the broker")
        rest = self._buffer[self._position :]
        self._buffer = rest + chunk if rest else chunk
        self._position = 0
        self._last_rx = time.time()

    async def _take(self, count):
        """`count` bytes: what the buffer holds first, then straight from the stream."""
        held = self._buffer[self._position : self._position + count]
        self._position += len(held)
        if len(held) < count:
            held += await self._link()[0].readexactly(count - len(held))
        return held

    async def _next_packet(self):
        """The next packet as (first byte, body), read as needed; a PUBLISH too large is read past.

        Packets are parsed out of whole reads: one read for as many as have arrived.
        """
        while True:
            packet = self._parse()
            if packet is None:
                await self._fill()
                continue
            header, body, length = packet
            if body is not None:
                return header, body
            await self._skip_publish(header, length)

    async def _skip_publish(self, header, length):
        """Read past a PUBLISH too large to hold (its topic and id kept) and acknowledge it."""
        qos = (header >> 1) & 3
        topic_length = struct.unpack(">H", await self._take(2))[0]
        fixed = 2 + topic_length + (2 if qos else 0)
        if fixed > length:
            raise MQTTError("PUBLISH topic longer than the packet")
        rest = await self._take(fixed - 2)
        left = length - fixed
        while left:
            left -= len(await self._take(min(left, 4096)))
        self.oversized += 1
        self.log(
            "mqtt %s: skipped a PUBLISH of %d bytes (limit %d) on %s"
            % (
                self.broker.key(),
                length,
                self.max_packet_bytes,
                repr(bytes(rest[: min(topic_length, 200)])),
            )
        )
        self.on_oversized(bytes(rest[:topic_length]), length - fixed)  # the payload's size
        if qos:
            await self._send(bytes((PUBACK, 2)) + rest[topic_length : topic_length + 2])

    async def _serve(self):
        # A reader task takes whole packets; this loop watches the link and the keepalive, so a
        # read is never cancelled half-way through a packet while the connection is meant to live.
        reader = asyncio.create_task(self._read_forever())
        ping_sent = None
        self._drop_reason = None
        try:
            while True:
                await asyncio.sleep(0.25)
                if self._drop_reason:
                    raise MQTTError(self._drop_reason)
                if reader.done():
                    await reader  # re-raises why the reader stopped
                    raise MQTTError("reader stopped")
                if self.link_up and not self.link_up():
                    raise MQTTError("network down")
                now = time.time()
                if ping_sent is None and now - self._last_rx >= self.keepalive_s:
                    await self._send(bytes((PINGREQ, 0)))
                    ping_sent = now
                elif ping_sent is not None:
                    if self._last_rx >= ping_sent:
                        ping_sent = None
                    elif now - ping_sent > self.keepalive_s / 2:
                        raise MQTTError("dead link: no answer to PINGREQ")
        finally:
            reader.cancel()

    async def _read_forever(self):
        while True:
            header, body = await self._next_packet()
            kind = header & 0xF0
            if kind == PUBLISH:
                await self._incoming(header, body)
            elif kind == PUBACK:
                if len(body) != 2:
                    raise MQTTError("PUBACK with %d bytes" % len(body))
                event = self._pending.get(struct.unpack(">H", body)[0])
                if event:
                    event.set()
            elif kind == SUBACK:
                if len(body) < 3:
                    raise MQTTError("SUBACK too short")
                for code in body[2:]:
                    if code == 0x80:
                        raise MQTTError("broker refused a subscription")
            elif kind == PINGRESP:
                if body:
                    raise MQTTError("PINGRESP with a body")
            else:
                raise MQTTError("unexpected packet type 0x%02x from the broker" % kind)

    async def _incoming(self, header, body):
        qos = (header >> 1) & 3
        if qos == 3 or len(body) < 2:
            raise MQTTError("malformed PUBLISH")
        topic_length = struct.unpack(">H", body[:2])[0]
        end = 2 + topic_length
        if end + (2 if qos else 0) > len(body):
            raise MQTTError("PUBLISH topic longer than the packet")
        topic = str(body[2:end], "utf-8")
        payload = body[end + 2 :] if qos else body[end:]
        if self.manual_ack:
            token = (self.connects, body[end : end + 2]) if qos else None
            try:
                if self.on_message:
                    await self.on_message(topic, payload, token)
            except Exception as error:  # an application error never takes the connection down
                self.log("mqtt message handler failed: %s %s" % (type(error).__name__, error))
            return
        if self.on_message:
            try:
                await self.on_message(topic, payload)
            except Exception as error:
                self.log("mqtt message handler failed: %s %s" % (type(error).__name__, error))
        if qos:
            await self._send(bytes((PUBACK, 2)) + body[end : end + 2])

    async def ack(self, tokens):
        """Acknowledge messages received with manual_ack, in one write; return how many were sent.

        Tokens of an earlier connection are left out: the broker delivers those messages again.
        """
        connects = self.connects
        packet_ids = [packet_id for connection, packet_id in tokens if connection == connects]
        if packet_ids and self.is_up:
            await self._send(PUBACK_2 + PUBACK_2.join(packet_ids))  # PUBACK, length 2, the id
            return len(packet_ids)
        return 0

    async def publish(self, topic, payload, qos=1, retain=False, dup=False):
        """Publish; with QoS 1 wait for the PUBACK. Raise MQTTError if down or unacknowledged."""
        if not self.is_up:
            raise MQTTError("not connected")
        packet_id = 0
        event = None
        if qos:
            self._next_id = self._next_id % 65535 + 1
            packet_id = self._next_id
            event = asyncio.Event()
            self._pending[packet_id] = event
        try:
            await self._send(publish_packet(topic, payload, qos, retain, packet_id, dup))
            if event:
                await asyncio.wait_for(event.wait(), self.ack_timeout_s)
                if not self.is_up:
                    raise MQTTError("connection lost before PUBACK")
        except asyncio.TimeoutError:  # first: on CPython it is an OSError too
            raise MQTTError("no PUBACK within %.1f s" % self.ack_timeout_s)
        except OSError:
            raise MQTTError("connection lost while publishing")
        finally:
            if packet_id:
                self._pending.pop(packet_id, None)
