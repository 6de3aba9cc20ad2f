"""An asyncio MQTT 3.1.1 client for the board: one object per broker, owning its connection.

Like mqtt_as, one state machine owns connect, keepalive, reconnect with capped exponential
backoff and jitter; the application sees `is_up`, the `on_up` coroutine (awaited after each
connect), `publish()` and one callback, `on_message(message)` with a `Message`. The
subscriptions are the constructor's, made again on every connect: subscribing and unsubscribing
while connected, and `wait_up()`, are fp.mqtt_subscribe's (the host's and the tests'; a board
never waits for its link: its on_up announces it). (No `up`/`down` events as mqtt_as has: nothing waited on
them, and each held two asyncio.Event objects per client.)
It runs unchanged under MicroPython and CPython (the host agent subclasses it: host_agent/bus/ackclient.py).

Session (clean=False): each QoS 1 PUBLISH stays in the client's session until its PUBACK, each
QoS 2 PUBLISH until its PUBREC and then, as the PUBREL that answers it, until its PUBCOMP
(MQTT-4.3.3-1). After a reconnect the ones sent and not acknowledged go again first, with their
packet id: the PUBRELs in the order their PUBRECs came (MQTT-4.6.0-4), then the PUBLISHes in the
order first sent, with DUP=1 (MQTT-4.4.0-1, MQTT-4.6.0-1); a PUBLISH whose PUBREC came is never
sent again. Then the queue behind them. At most `max_inflight` are unacknowledged at once; the
rest wait in a queue of `max_queued`, and each PUBACK or PUBCOMP lets exactly one more go.
`publish()` returns when the broker has acknowledged the message (QoS 2: its PUBCOMP), however
many connections that takes. With clean=True a lost connection ends the session, and the
publishes in it fail.

Failure modes it survives (each drops the connection and reconnects, never crashes the loop):
- broker down or refusing (CONNACK code != 0): backoff 0.5 s doubling to `max_backoff_s`, jittered;
- dead link: no PINGRESP within `keepalive_s`/2 of a PINGREQ; a PINGREQ goes when nothing was
  sent for `keepalive_s`/2 (keepalive is counted from the last packet sent, MQTT-3.1.2-23);
- no PUBACK, PUBREC or PUBCOMP within `ack_timeout_s` of the PUBLISH or PUBREL it answers (sent
  again on the next connection);
- the network going away (the hardware layer's `link_up()` turning false);
- malformed or unexpected packets from the broker (bad lengths or flags, packet types a broker
  never sends, anything but a PUBLISH beyond `max_packet_bytes`, a PUBREC or PUBCOMP for no QoS 2
  publish of ours waiting for it, a PUBACK for a QoS 2 one): MQTTError, reconnect (a PUBREC again
  for one whose PUBREL went is answered with the PUBREL again: brokers do send them);
- a MemoryError while connecting or serving (a heap too full or too fragmented for a packet just
  then): the connection and its buffers dropped, reconnect; it never ends the client's task;
- a PUBLISH beyond `max_packet_bytes`: read past without holding it, acknowledged (a broker would
  otherwise send it again on every connection), counted in `oversized` and logged;
- a QoS 2 PUBLISH (a broker sends none for QoS 0/1 subscriptions, but may): PUBREC, delivered
  once however often it comes until its PUBREL, which is answered with PUBCOMP (MQTT-4.3.3-2).
QoS 2's steps (a QoS 2 PUBLISH received, the PUBREC and PUBCOMP of one sent) are fp.mqtt_qos2's
and reading past a PUBLISH too large is fp.mqtt_oversized's, each imported at the first packet
that needs it: a board publishes and subscribes at QoS 1 and gets nothing that large, so from
.mpy it never holds that code (about 1 KB on 32 bits, docs/benchmarks.md).
With `reconnect=False` the client is one-shot: `run()` raises the MQTTError that ended the first
connection (a refused CONNACK, a closed socket) instead of trying again.
`stop()` sends DISCONNECT (so the broker discards the will: a planned stop is no "offline") and
closes the socket; no task is left with an error nobody retrieves.
"""

import asyncio
import random
import struct
import time

from fp import const

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any, Awaitable, Callable, Iterable

    from fp.mqtt_tls import TLS

    Will = tuple[str, "bytes | bytearray", int, bool]  # (topic, payload, qos, retain)
    Packet = tuple[int, "bytes | None", int]  # (first byte, body or None: too large, length)

try:
    from time import (  # MicroPython's wrapping millisecond clock
        ticks_diff,  # pyright: ignore[reportAssignmentType] (the stubs' ticks type)
        ticks_ms,  # pyright: ignore[reportAssignmentType]
    )
except ImportError:  # CPython

    def ticks_ms() -> int:
        """A millisecond clock for intervals (wraps on MicroPython: compare with ticks_diff)."""
        return int(time.monotonic() * 1000)  # pyright: ignore[reportAttributeAccessIssue] (CPython only)

    def ticks_diff(end: int, start: int) -> int:
        return end - start


# Packet types and codes: const() names, folded into the code by MicroPython's compiler; those
# with a leading underscore take no room in the module's globals on a board.
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_PUBREC = const(0x50)
_PUBREL = const(0x62)  # with its fixed flags 0010 (MQTT-3.6.1-1)
_PUBCOMP = const(0x70)
_SUBSCRIBE = const(0x82)  # flags 0010 (MQTT-3.8.1-1)
_SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)
_PUBACK_2 = const(b"\x40\x02")  # PUBACK, remaining length 2; the packet id follows
_SUBACK_FAILURE = const(0x80)
_PROTOCOL = const(b"\x00\x04MQTT\x04")  # CONNECT's protocol name and level 4: MQTT 3.1.1 (MQTT-3.1.2-1, -2)
# CONNACK's refusal codes 1..5, in order: one string, split on a refusal (a tuple of five strings
# would be six objects held in the heap for an error path), on fp.app's crash-line separator (a
# short str is a name in a board's pool: one it holds already)
_CONNACK_REFUSALS = const(
    "unacceptable protocol version | client identifier rejected | server unavailable"
    " | bad user name or password | not authorized"
)

# MQTTError.reason, a closed set of short stable strings:
# "refused"  CONNACK with a non-zero code (MQTTError.code holds it)
# "closed"  the broker closed the connection
# "timeout"  no CONNACK, PINGRESP or PUBACK in time
# "protocol"  a packet the spec does not allow from a broker
# "network"  the link is down or a socket error
# "down"  not connected (publish/subscribe while down, or a clean session lost)
# "queue-full"  max_queued publishes already wait
# "stopped"  stop() was called
# "subscription-refused"  SUBACK return code 0x80
# "dropped"  reconnect() asked for a new connection
# "tls"  the TLS handshake failed: the broker's certificate or name, or ours refused


class MQTTError(Exception):
    """A failure of the connection or of one request, with `reason` (one of the list above)."""

    def __init__(self, reason: str, detail: str = "", code: "int | None" = None):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason
        self.code = code


class Message:
    """An application message received from the broker."""

    __slots__ = ("topic", "payload", "qos", "retain", "dup")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool):
        self.topic = topic  # str
        self.payload = payload  # bytes
        self.qos = qos
        self.retain = retain
        self.dup = dup


def _string(value: "str | bytes | bytearray", name: str) -> bytes:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) > 65535:
        raise ValueError("%s longer than 65,535 bytes" % name)
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("%s holds U+0000" % name)  # MQTT-1.5.3-2
    return struct.pack(">H", len(raw)) + raw


def _remaining_length(n: int) -> bytes:
    if n > 268435455:
        raise ValueError("packet longer than 268,435,455 bytes")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def check_topic(topic: str) -> None:
    """Raise ValueError unless `topic` may be published to (MQTT-4.7.3-1, MQTT-3.3.2-2)."""
    if not isinstance(topic, str) or not topic:
        raise ValueError("topic must be a non-empty string")
    if "+" in topic or "#" in topic:
        raise ValueError("topic %r has a wildcard" % topic)


def connect_packet(
    client_id: str,
    keepalive_s: float,
    clean: bool,
    will: "Will | None" = None,
    user: "str | None" = None,
    password: "str | bytes | None" = None,
) -> bytes:
    """Return the bytes of a CONNECT packet; `will` is (topic, payload, qos, retain).

    Raise ValueError for what MQTT 3.1.1 forbids a client to send.
    """
    if not isinstance(client_id, str):
        raise ValueError("client id must be a string")
    if not client_id and not clean:
        raise ValueError("an empty client id needs clean=True")  # MQTT-3.1.3-7
    if not 0 <= keepalive_s <= 65535:
        raise ValueError("keepalive_s must be 0..65535")
    if password is not None and user is None:
        raise ValueError("a password needs a user name")  # MQTT-3.1.2-22
    flags = 0x02 if clean else 0
    payload = _string(client_id, "client_id")  # the argument's name: one a board holds
    if will:
        topic, message, qos, retain = will
        check_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError("will qos must be 0, 1 or 2")
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _string(topic, "will") + _string(message, "will message")
    if user is not None:
        flags |= 0x80
        payload += _string(user, "user")
        if password is not None:
            flags |= 0x40
            payload += _string(password, "password")
    variable = _PROTOCOL + bytes((flags,)) + struct.pack(">H", int(keepalive_s))
    body = variable + payload
    return bytes((_CONNECT,)) + _remaining_length(len(body)) + body


def publish_packet(
    topic: str, payload: "bytes | bytearray", qos: int, retain: bool, packet_id: int, dup: bool = False
) -> bytes:
    """Return the bytes of a PUBLISH packet."""
    header = _PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _string(topic, "topic") + (struct.pack(">H", packet_id) if qos else b"") + bytes(payload)
    return bytes((header,)) + _remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, subscriptions: "Iterable[tuple[str, int]]") -> bytes:
    """Return the bytes of a SUBSCRIBE packet for [(filter, qos), ...].

    Raise ValueError for a filter that is not valid (MQTT-4.7.1-2, MQTT-4.7.1-3): fp.mqtt_subscribe
    checks an UNSUBSCRIBE's filters here too."""
    if not subscriptions:
        raise ValueError("SUBSCRIBE needs at least one filter")  # MQTT-3.8.3-3
    body = struct.pack(">H", packet_id)
    for topic_filter, qos in subscriptions:
        if not isinstance(topic_filter, str) or not topic_filter:
            raise ValueError("topic filter must be a non-empty string")
        levels = topic_filter.split("/")
        for index, level in enumerate(levels):
            if "#" in level and (level != "#" or index != len(levels) - 1):
                raise ValueError("'#' must be a whole last level in %r" % topic_filter)
            if "+" in level and level != "+":
                raise ValueError("'+' must be a whole level in %r" % topic_filter)
        if qos not in (0, 1, 2):
            raise ValueError("subscription qos must be 0, 1 or 2")
        body += _string(topic_filter, "topic filter") + bytes((qos,))
    return bytes((_SUBSCRIBE,)) + _remaining_length(len(body)) + body


class Broker:
    """Where and how to connect: validated once, used by MQTTClient. `tls` is a TLS broker's
    settings, checked (an fp.mqtt_tls.TLS: CA, client certificate, server name, ALPN), or None for
    a plain-TCP broker: this module never names them, so a plain-TCP board's name pool holds none
    of them, and only a TLS destination loads fp.mqtt_tls (fp.destinations, through fp.pem)."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        user: "str | None" = None,
        password: "str | bytes | None" = None,
        tls: "TLS | None" = None,
    ):
        if not isinstance(host, str) or not host:
            raise ValueError("broker host must be a non-empty string")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError("broker port must be 1..65535")
        if password is not None and user is None:
            raise ValueError("a broker password needs a user name")
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.tls = tls

    def key(self) -> str:
        return "%s:%d" % (self.host, self.port)


class _Outgoing:
    """A QoS 1 or 2 PUBLISH of the session: queued, then in flight until its PUBACK (QoS 1) or its
    PUBREC, when `packet` becomes the PUBREL, in flight until its PUBCOMP (QoS 2)."""

    __slots__ = ("packet", "id_at", "packet_id", "sent_ms", "done", "error")

    def __init__(self, packet: bytearray, id_at: int):
        self.packet = packet  # PUBLISH bytearray (the id and DUP filled in place), or the PUBREL
        self.id_at = id_at
        self.packet_id = 0
        self.sent_ms = 0
        self.done = asyncio.Event()
        self.error: "MQTTError | None" = None


class _Request:
    """A SUBSCRIBE or UNSUBSCRIBE waiting for its SUBACK or UNSUBACK (`kind`, that packet's type:
    0x90 or 0xB0)."""

    __slots__ = ("kind", "done", "result", "error")

    def __init__(self, kind: int, result: "Any"):
        self.kind = kind
        self.done = asyncio.Event()
        self.result: "Any" = result  # the filters asked, then the SUBACK's codes
        self.error: "MQTTError | None" = None


class MQTTClient:
    """One connection to one broker, kept up by `run()`."""

    # What most boards never change, or hold only for a while, stays on the class: an instance's
    # attribute table (8 bytes a name on 32 bits) grows in steps and never shrinks, and 37 names
    # fit the step below 47.
    on_up: "Callable[[], Awaitable[None]] | None" = None  # awaited after each (re)connect
    # called with (topic bytes, payload size) for each PUBLISH read past, when set (the agent's
    # connection sets it; on a board the count and the log line are enough): declared, not
    # assigned, so this module makes no name of it in a board's pool (fp.mqtt_oversized reads it)
    on_oversized: "Callable[[bytes, int], None] | None"
    oversized = 0
    errors = 0
    _stopped = False
    _on_up_task: "asyncio.Task[None] | None" = None  # held while on_up runs (CPython holds tasks weakly)

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        on_message: "Callable[[Any], Awaitable[None]] | None" = None,
        will: "Will | Callable[[], Will] | None" = None,
        keepalive_s: float = 30,
        clean: bool = True,
        subscriptions: "Iterable[tuple[str, int]]" = (),
        max_packet_bytes: int = 8192,
        # whole seconds as ints: a float constant is an object in the heap of a 32-bit board
        ack_timeout_s: float = 10,
        max_backoff_s: float = 30,
        log: "Callable[[str], Any] | None" = None,
        link_up: "Callable[[], bool] | None" = None,
        read_chunk: int = 512,
        max_inflight: int = 4,
        max_queued: int = 16,
        reconnect: bool = True,
        connect_timeout_s: float = 10,
    ):
        # checked here, once: a bad client id or will fails at construction, not at each connect
        connect_packet(client_id, keepalive_s, clean, None, broker.user, broker.password)
        if will and not callable(will):
            connect_packet(client_id, keepalive_s, clean, will)
        for topic_filter, qos in subscriptions:
            subscribe_packet(1, [(topic_filter, qos)])
        if max_inflight < 1 or max_queued < 0:
            raise ValueError("max_inflight must be >= 1 and max_queued >= 0")
        self.broker = broker
        self.client_id = client_id
        self.on_message = on_message  # awaited with a Message; the PUBACK goes after it returns
        self.will = will
        self.keepalive_s = keepalive_s
        self.clean = clean
        self.subscriptions = list(subscriptions)
        self.max_packet_bytes = max_packet_bytes
        self.ack_timeout_s = ack_timeout_s
        self.max_backoff_s = max_backoff_s
        self.log: "Callable[[str], Any]" = log or (lambda text: None)
        self.link_up = link_up  # the hardware layer's "is the network there?" (Wi-Fi, or the sim's cut)
        self.read_chunk = read_chunk  # bytes per read: small on a board, large for the agent's stream
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.is_reconnecting = reconnect
        self.connect_timeout_s = connect_timeout_s
        self.is_up = False
        self.connects = 0
        self.session_present = False
        self.granted: "dict[str, int]" = {}  # topic filter -> granted QoS, or 0x80 when the broker refused it
        # the open connection's (reader, writer); under MicroPython both are the same Stream
        self._streams: "tuple[asyncio.StreamReader, asyncio.StreamWriter] | None" = None
        self._buffer: "bytes" = b""  # read from the broker, parsed up to _position
        self._position = 0
        self._next_id = 0
        self._queue: "list[_Outgoing]" = []  # _Outgoing not yet sent, oldest first
        self._window: "list[_Outgoing]" = []  # _Outgoing sent (or to resend), unacknowledged: PUBRELs, then PUBLISHes oldest first
        self._requests: "dict[int, _Request]" = {}  # packet id -> _Request
        self._qos2_ids: "set[bytes]" = set()  # QoS 2 packet ids received, not yet released (PUBREL)
        # why the serving loop must drop the connection: reconnect()'s reason (a failed write's
        # too), or the error that ended the reader task
        self._drop_cause: "str | Exception | None" = None
        self._write_lock = asyncio.Lock()
        self._last_tx_ms = ticks_ms()
        self._pingresp_count = 0
        self._reader_task: "asyncio.Task[None] | None" = None

    # --- the application's surface -------------------------------------------------------

    async def publish(
        self, topic: str, payload: "bytes | bytearray", qos: int = 1, retain: bool = False
    ) -> None:
        """Publish; with QoS 1 or 2 return once the broker acknowledged it (PUBACK, or PUBCOMP),
        across reconnects when the session is kept. Raise MQTTError ("down", "queue-full",
        "stopped") when it cannot."""
        check_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError("publish qos must be 0, 1 or 2")
        if self._stopped:
            raise MQTTError("stopped")
        if not self.is_up:
            raise MQTTError("down", "not connected")
        if not qos:
            try:
                await self._send(publish_packet(topic, payload, 0, retain, 0))
            except OSError as error:
                self.reconnect("write failed: %s" % error)
                raise MQTTError("network", "write failed")
            return
        if len(self._queue) >= self.max_queued and len(self._window) >= self.max_inflight:
            raise MQTTError("queue-full", "%d publishes wait" % len(self._queue))
        packet = bytearray(publish_packet(topic, payload, qos, retain, 0))
        id_at = len(packet) - len(payload) - 2
        entry = _Outgoing(packet, id_at)
        self._queue.append(entry)
        try:
            await self._pump()
            await entry.done.wait()
        except asyncio.CancelledError:
            if entry in self._queue:  # never sent: withdrawn; one in flight stays in the session
                self._queue.remove(entry)
            raise
        if entry.error:
            raise entry.error

    async def run(self) -> None:
        """Connect, serve, and reconnect (until stop(); once only with reconnect=False)."""
        backoff = min(0.5, self.max_backoff_s)
        while not self._stopped:
            failure = None
            try:
                await self._connect()
                backoff = min(0.5, self.max_backoff_s)
                if self.on_up:
                    self._on_up_task = asyncio.create_task(self._call_on_up(self.on_up))
                await self._serve()
            except MQTTError as error:
                failure = error
            except asyncio.TimeoutError:  # before OSError: CPython's is one
                failure = MQTTError("timeout", "connect")
            except EOFError:
                failure = MQTTError("closed", "connection closed by the broker")
            except MemoryError:  # a packet or a TLS buffer the heap could not hold just now
                failure = MQTTError("memory", "out of memory")
            except (OSError, ValueError, IndexError) as error:
                reason = "network" if isinstance(error, OSError) else "protocol"
                tls = self.broker.tls
                if tls is not None and not self.is_up and tls.is_tls_error(error):
                    reason = "tls"  # while connecting: the handshake, at the first write or read
                failure = MQTTError(reason, type(error).__name__ + " " + str(error))
            if failure is not None and not self._stopped:
                self.errors += 1
                self.log("mqtt %s: %s" % (self.broker.key(), failure))
            self._drop()
            if self._stopped:
                break
            if not self.is_reconnecting:
                self.stop()
                raise failure or MQTTError("closed")
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self.max_backoff_s)

    def reconnect(self, reason: str) -> None:
        """Drop the current connection (the state machine then reconnects with backoff)."""
        if self._drop_cause is None:  # the first cause is the one logged
            self._drop_cause = reason

    def stop(self) -> None:
        """Send DISCONNECT (no will), close, stop reconnecting; what waits fails with "stopped"."""
        if self._stopped:
            return
        self._stopped = True
        if self.is_up and self._streams is not None:
            try:
                # written straight to the socket (both interpreters write at once when nothing
                # else is buffered); after it nothing more is sent (MQTT-3.14.4-2)
                self._streams[1].write(bytes((_DISCONNECT, 0)))
            except OSError:
                pass
        self._drop()
        error = MQTTError("stopped")
        for entry in self._queue + self._window:
            entry.error = error
            entry.done.set()
        self._queue, self._window = [], []

    # --- connection ------------------------------------------------------------------------

    async def _call_on_up(self, on_up: "Callable[[], Awaitable[None]]") -> None:
        try:
            await on_up()
        except Exception as error:  # never a task whose error nobody retrieves
            self.log("mqtt %s: on_up failed: %s %s" % (self.broker.key(), type(error).__name__, error))
        if self._on_up_task is asyncio.current_task():
            self._on_up_task = None  # done: the task and its frames go now, not at the next connect

    def _drop(self) -> None:
        was_up = self.is_up
        self.is_up = False
        task = self._reader_task
        self._reader_task = None
        if task is not None:
            # cancelled before its socket closes: under MicroPython a read woken by the close
            # would end the task with EBADF, an error nobody retrieves
            task.cancel()
        streams = self._streams
        self._streams = None
        if streams is not None:
            writer = streams[1]
            try:
                writer.close()
                # MicroPython's Stream.close() does nothing (only wait_closed() closes the socket):
                # close the socket itself, or every reconnect would leak one.
                sock = getattr(writer, "s", None)
                if sock is not None:
                    sock.close()
            except OSError:
                pass
        down = MQTTError("down", "connection lost")
        for request in self._requests.values():
            request.error = down
            request.done.set()
        self._requests = {}
        if self.clean or self._stopped:
            # a clean session ends with its connection (MQTT-3.1.2-6): what it carried is lost
            for entry in self._window + (self._queue if self._stopped else []):
                entry.error = down if not self._stopped else MQTTError("stopped")
                entry.done.set()
            self._window = []
            self._qos2_ids = set()
        if was_up:
            self.log("mqtt %s: down" % self.broker.key())

    async def _connect(self) -> None:
        if self.link_up and not self.link_up():
            raise MQTTError("network", "network down")
        broker, tls = self.broker, self.broker.tls
        if tls is not None:
            opening = asyncio.open_connection(
                broker.host, broker.port, ssl=tls.context(), server_hostname=tls.server_hostname
            )
        else:
            opening = asyncio.open_connection(broker.host, broker.port)
        self._streams = await asyncio.wait_for(opening, self.connect_timeout_s)  # (reader, writer)
        if self._stopped:  # stop() came while the socket opened: run() closes it
            raise MQTTError("stopped")
        self._buffer, self._position = b"", 0
        self._drop_cause = None
        # The will may be a function: a signed "offline" status must be fresh for each connection.
        will = self.will() if callable(self.will) else self.will
        await self._send(
            connect_packet(
                self.client_id, self.keepalive_s, self.clean, will, self.broker.user, self.broker.password
            )
        )
        try:
            header, body = await asyncio.wait_for(self._next_packet(), self.connect_timeout_s)
        except asyncio.TimeoutError:
            raise MQTTError("timeout", "no CONNACK within %.1f s" % self.connect_timeout_s)
        if header != _CONNACK or len(body) != 2 or body[0] & 0xFE:
            raise MQTTError("protocol", "expected CONNACK, got packet type 0x%02x" % header)
        if body[1] != 0:
            code = body[1]
            raise MQTTError(
                "refused",
                _CONNACK_REFUSALS.split(" | ")[code - 1] if code <= 5 else "return code %d" % code,
                code,
            )
        if self._stopped:
            raise MQTTError("stopped")
        self.session_present = bool(body[0] & 1)
        if self.clean and self.session_present:
            raise MQTTError("protocol", "session present on a clean session")  # MQTT-3.2.2-1
        # The session's unacknowledged PUBRELs, then PUBLISHes, in order, same ids, a PUBLISH with
        # DUP=1 (MQTT-4.4.0-1): the window holds them so (_acknowledged)
        for entry in self._window:  # each was sent once (fp.mqtt._pump): a PUBLISH goes again as DUP
            if entry.packet[0] != _PUBREL:
                entry.packet[0] |= 0x08
            entry.sent_ms = ticks_ms()
            await self._send(entry.packet)
        if self.subscriptions:
            packet_id = self._new_id()
            self._requests[packet_id] = _Request(_SUBACK, list(self.subscriptions))
            await self._send(subscribe_packet(packet_id, self.subscriptions))
        self.is_up = True
        self.connects += 1
        self._reader_task = asyncio.create_task(self._read_forever())
        self.log("mqtt %s: up" % self.broker.key())
        await self._pump()

    def _new_id(self) -> int:
        """A packet id no unacknowledged packet of ours holds (MQTT-2.3.1-1, MQTT-2.3.1-2)."""
        used = [entry.packet_id for entry in self._window]
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._requests and self._next_id not in used:
                return self._next_id

    async def _send(self, packet: "bytes | bytearray") -> None:
        """Write one packet (or several, joined) whole: one writer at a time, so packets of
        concurrent tasks never interleave and MicroPython's stream never drains twice at once."""
        streams = self._streams
        if streams is None:
            raise MQTTError("down", "not connected")
        writer = streams[1]
        async with self._write_lock:
            if streams is not self._streams:  # the connection changed while this waited its turn
                raise MQTTError("down", "connection lost")
            writer.write(packet)
            await writer.drain()
            self._last_tx_ms = ticks_ms()

    async def _pump(self) -> None:
        """Send queued publishes while the window has room (each PUBACK or PUBCOMP makes room for one)."""
        while self.is_up and self._queue and len(self._window) < self.max_inflight:
            entry = self._queue.pop(0)
            entry.packet_id = self._new_id()
            struct.pack_into(">H", entry.packet, entry.id_at, entry.packet_id)
            self._window.append(entry)
            entry.sent_ms = ticks_ms()
            try:
                await self._send(entry.packet)
            except (OSError, MQTTError) as error:  # it stays in the window: sent again on reconnect
                self.reconnect("write failed: %s" % error)
                return

    # --- reading ---------------------------------------------------------------------------

    def _link(self) -> "asyncio.StreamReader":
        """The open connection's reader, or MQTTError when there is none."""
        if self._streams is None:
            raise MQTTError("down", "not connected")
        return self._streams[0]

    def _parse(self) -> "Packet | None":
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
            raise MQTTError("protocol", "remaining length longer than 4 bytes")
        header = buffer[start]
        if length > self.max_packet_bytes:
            if header & 0xF0 != _PUBLISH:
                raise MQTTError(
                    "protocol",
                    "packet of %d bytes exceeds the %d-byte limit" % (length, self.max_packet_bytes),
                )
            self._position = index
            return header, None, length
        if end - index < length:
            return None
        body = buffer[index : index + length]
        self._position = index + length
        if self._position == end:  # all parsed: the read's bytes are not held until the next one
            self._buffer, self._position = b"", 0
        return header, body, length

    async def _next_packet(self) -> "tuple[int, bytes]":
        """The next packet as (first byte, body), read as needed; a PUBLISH too large is read past.

        Packets are parsed out of whole reads: one read (up to read_chunk bytes, behind what is
        left unparsed) for as many as have arrived.
        """
        while True:
            packet = self._parse()
            if packet is None:
                chunk = await self._link().read(self.read_chunk)
                if not chunk:
                    raise MQTTError("closed", "connection closed by the broker")
                rest = self._buffer[self._position :]
                self._buffer = rest + chunk if rest else chunk
                self._position = 0
                continue
            header, body, length = packet
            if body is not None:
                return header, body
            from fp import mqtt_oversized  # a PUBLISH too large to hold is rare: its code too

            await mqtt_oversized._skip_publish(self, header, length)

    async def _read_forever(self) -> None:
        # Never ends with an error: it keeps it for the serving loop, which drops the link.
        try:
            while True:
                header, body = await self._next_packet()
                await self._dispatch(header, body)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if self._drop_cause is None:
                self._drop_cause = error

    async def _dispatch(self, header: int, body: bytes) -> None:
        kind = header & 0xF0
        if kind == _PUBLISH:
            await self._incoming(header, body)
            return
        if header == _PUBREL:
            if len(body) != 2:
                raise MQTTError("protocol", "PUBREL with %d bytes" % len(body))
            self._qos2_ids.discard(bytes(body))
            await self._send(bytes((_PUBCOMP, 2)) + body)  # MQTT-4.3.3-2: for every PUBREL
            return
        if header & 0x0F:
            # the flags of every other packet a broker sends are 0000 (MQTT-2.2.2-2)
            raise MQTTError("protocol", "packet 0x%02x with reserved flags set" % header)
        if kind in (_PUBACK, _PUBREC, _PUBCOMP, _SUBACK, _UNSUBACK):
            # each is a packet id, and a SUBACK one return code for each filter after it
            if len(body) != 2 and (kind != _SUBACK or len(body) < 2):
                raise MQTTError("protocol", "acknowledgement 0x%02x with %d bytes" % (kind, len(body)))
        if kind == _PUBACK or kind == _PUBREC or kind == _PUBCOMP:
            await self._acknowledged(kind, struct.unpack(">H", body)[0])
        elif kind == _SUBACK or kind == _UNSUBACK:
            request = self._requests.pop(struct.unpack(">H", body[:2])[0], None)
            if request is None or request.kind != kind:
                raise MQTTError("protocol", "acknowledgement of no request of ours")
            if kind == _SUBACK:
                codes = bytes(body[2:])
                if len(codes) != len(request.result):
                    raise MQTTError(
                        "protocol", "SUBACK with %d codes for %d filters" % (len(codes), len(request.result))
                    )
                for (topic_filter, _), code in zip(request.result, codes):
                    if code not in (0, 1, 2, _SUBACK_FAILURE):
                        raise MQTTError("protocol", "SUBACK code 0x%02x" % code)
                    self.granted[topic_filter] = code
                    if code == _SUBACK_FAILURE:
                        self.log("mqtt %s: subscription to %s refused" % (self.broker.key(), topic_filter))
                request.result = codes
            request.done.set()
        elif kind == _PINGRESP:
            if body:
                raise MQTTError("protocol", "PINGRESP with a body")
            self._pingresp_count += 1
        else:
            raise MQTTError("protocol", "unexpected packet type 0x%02x from the broker" % kind)

    async def _acknowledged(self, kind: int, packet_id: int) -> None:
        """A PUBACK, PUBREC or PUBCOMP: release the publish it ends (QoS 2's steps: fp.mqtt_qos2)."""
        window = self._window
        index = 0
        for entry in window:
            if entry.packet_id == packet_id:
                break
            index += 1
        else:
            if kind == _PUBACK:  # for no message of ours (a late one after a resend): nothing to release
                return
            entry = None
        # anything but a QoS 1 PUBLISH's PUBACK (its first byte 0011 d01r) is QoS 2's
        if entry is None or kind != _PUBACK or entry.packet[0] & 0xF6 != 0x32:
            from fp import mqtt_qos2

            if not await mqtt_qos2._acknowledged(self, kind, packet_id, index, entry):
                return
        del window[index]
        entry.done.set()  # pyright: ignore[reportOptionalMemberAccess] (None never returns True)
        await self._pump()

    async def _incoming(self, header: int, body: bytes) -> None:
        qos = (header >> 1) & 3
        if qos == 3 or len(body) < 2:
            raise MQTTError("protocol", "malformed PUBLISH")
        topic_length = struct.unpack(">H", body[:2])[0]
        end = 2 + topic_length
        if end + (2 if qos else 0) > len(body):
            raise MQTTError("protocol", "PUBLISH topic longer than the packet")
        try:
            topic = str(body[2:end], "utf-8")
        except UnicodeError:
            raise MQTTError("protocol", "PUBLISH topic is not UTF-8")  # MQTT-1.5.3-1
        if not topic or "\x00" in topic or "+" in topic or "#" in topic:
            # MQTT-1.5.3-2, MQTT-4.7.3-1, MQTT-3.3.2-2: a broker never sends such a topic name
            raise MQTTError("protocol", "PUBLISH topic name %r is not valid" % topic[:64])
        packet_id = body[end : end + 2]  # empty at QoS 0
        message = Message(
            topic, body[end + 2 :] if qos else body[end:], qos, bool(header & 1), bool(header & 8)
        )
        if qos == 2:
            from fp import mqtt_qos2

            await mqtt_qos2._incoming(self, message, packet_id)
            return
        await self._received(message, packet_id if qos else None)

    async def _received(self, message: Message, packet_id: "bytes | None") -> None:
        """Hand a QoS 0/1 message to the application, then acknowledge a QoS 1 one (its id)."""
        await self._deliver(message)
        if packet_id is not None:
            await self._send(_PUBACK_2 + packet_id)

    async def _deliver(self, message: Message) -> None:
        if self.on_message:
            try:
                await self.on_message(message)
            except Exception as error:  # an application error never takes the connection down
                self.log("mqtt message handler failed: %s %s" % (type(error).__name__, error))

    # --- keepalive and the link ------------------------------------------------------------

    async def _serve(self) -> None:
        # The reader task takes whole packets; this loop watches the link, the keepalive and the
        # acknowledgements, so a read is never cancelled half-way through a packet.
        ping_sent_ms = None
        pings_answered = self._pingresp_count
        keepalive_ms = int(self.keepalive_s * 1000)
        ack_timeout_ms = int(self.ack_timeout_s * 1000)
        tick_s = min(0.25, self.keepalive_s / 8) if self.keepalive_s else 0.25
        while True:
            await asyncio.sleep(tick_s)
            if self._stopped:
                return
            cause = self._drop_cause
            if isinstance(cause, Exception):
                raise cause
            if cause is not None:
                raise MQTTError("dropped", cause)
            if self.link_up and not self.link_up():
                raise MQTTError("network", "network down")
            now = ticks_ms()
            for entry in self._window:  # the oldest need not lead: a PUBREL moves ahead
                if ticks_diff(now, entry.sent_ms) > ack_timeout_ms:
                    raise MQTTError("timeout", "no acknowledgement within %.1f s" % self.ack_timeout_s)
            if not keepalive_ms:
                continue
            if ping_sent_ms is not None:
                if self._pingresp_count != pings_answered:
                    ping_sent_ms = None
                elif ticks_diff(now, ping_sent_ms) > keepalive_ms // 2:
                    raise MQTTError("timeout", "no PINGRESP within %.1f s" % (self.keepalive_s / 2))
            if ping_sent_ms is None and ticks_diff(now, self._last_tx_ms) >= keepalive_ms // 2:
                # counted from the last packet sent (MQTT-3.1.2-23), with half the interval to
                # spare; the PINGRESP also proves that the broker still answers
                pings_answered = self._pingresp_count
                await self._send(bytes((_PINGREQ, 0)))
                ping_sent_ms = ticks_ms()
