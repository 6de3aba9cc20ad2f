"""The device's destinations: one broker each, with its own connection and its own queue.

The device holds them in a dict by name (`device.destinations`), as config.json lists them;
`apply` starts and stops them when that list changes. `Destination` is one of them: its FIFO in
RAM and flash, and its delivery rule (PUBACK, or the agent's signed receipts).
"""

import asyncio
import os

from fp import const, device_messages, ids, topics
from fp.errors import ProtocolError
from fp.mqtt import Broker, MQTTClient, MQTTError
from fp.ringbuf import RingBuffer
from fp.runtime import log, unload

_RING_SLOTS = const(128)  # each destination's flash queue when board.json does not say (fp.settings)
_RAM_SLOTS = const(8)  # messages held in RAM per destination while it is up; beyond, they go to flash
_ACK_SLOTS = const(4)  # acks held in RAM ahead of the queue while the broker is up


class Destination:
    """One broker with its own connection and its own FIFO of signed messages.

    While the broker is reachable, messages wait in a few RAM slots and cost no flash writes.
    When it is not, they go to this destination's ring buffer in flash (fp.ringbuf), oldest
    first, and drain from there ahead of anything newer. Acks jump the queue while the broker is
    up: the owner waits for them, and a backlog of readings must not make a command time out
    (each kind has its own replay window, so a recipient accepts them out of that order).

    Two delivery rules, one per destination (docs/device-api.md, "Delivery"): this class is
    "puback", a message leaves the FIFO when its broker acknowledges it (PUBACK); a destination
    with a receipt key is a fp.receipted.ReceiptedDestination ("receipts"), loaded only then.
    """

    delivery = "puback"
    receipt_key = None
    ram_slots = _RAM_SLOTS  # a class's own: fp.receipted holds more

    def __init__(self, name, broker, client, ring, device_id):
        self.name = name
        self.broker = broker
        self.client = client
        self.ring = ring
        self.device_id = device_id
        self.ram = []  # invariant: holds messages only while the ring is empty
        self.acks = []  # acks waiting while the broker is up, sent before anything else
        self.lost = 0  # messages that could not even be buffered (flash error or too big)
        self.sent = 0
        # the newest boot whose reading was delivered (per the delivery rule): a reading of this
        # boot confirms a release on probation (fp.ota), not one an earlier release left queued
        self.reading_boot = -1
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None  # annotations in functions are never evaluated
        self.sender: asyncio.Task | None = None
        # the connection (client.connects) that has carried the card and status: a recipient must
        # be able to verify the first reading it gets, so nothing else goes out before them
        self.announced = -1

    @property
    def buffered(self):
        return len(self.ram) + len(self.acks) + self.ring.pending

    @property
    def dropped(self):
        return self.ring.dropped + self.lost

    def put(self, kind, payload):
        if kind == "ack" and self.client.is_up and len(self.acks) < _ACK_SLOTS:
            self.acks.append(payload)
        elif self.client.is_up and not self.ring.pending and len(self.ram) < self.ram_slots:
            self.ram.append((kind, payload))
        else:
            self.spill()
            self._to_flash(kind, payload)
        self.wake.set()

    def spill(self):
        """Move RAM messages to flash, oldest first, so a power cut cannot take them."""
        while self.ram:
            self._to_flash(*self.ram.pop(0))
        while self.acks:
            self._to_flash("ack", self.acks.pop(0))

    def _to_flash(self, kind, payload):
        try:
            self.ring.append(kind, payload)
        except (OSError, ValueError) as error:
            self.lost += 1
            log("destination %s: cannot buffer a %s: %s" % (self.name, kind, error))

    def _next(self):
        """The next message to send, or None to wait."""
        return self.ram[0] if self.ram else self.ring.peek()

    def _sent(self, item):
        """The broker acknowledged `item`: it leaves the FIFO, delivered (the PUBACK rule)."""
        if self.ram:
            self.ram.pop(0)
        else:
            self.ring.pop()
        self._delivered(*item)

    def _counter(self, payload):
        try:
            return device_messages.counter_of(payload)
        except ProtocolError:  # never one of ours: nothing can cover it, so it must not block
            return None

    def _delivered(self, kind, payload):
        counter = self._counter(payload) if kind == "reading" else None
        if counter is not None and counter[0] > self.reading_boot:
            self.reading_boot = counter[0]

    # --- the sender -----------------------------------------------------------------------------

    async def send_forever(self):
        while True:
            # nothing held while the sender waits: the last message sent (an ack of 400-odd bytes
            # after a command) would stay in this frame's locals until the next went out
            item = payload = None
            is_urgent = False
            if self.client.is_up and self.announced == self.client.connects:
                if self.acks:
                    item, is_urgent = ("ack", self.acks[0]), True
                else:
                    item = self._next()
            elif not self.client.is_up:
                self.spill()
            if item is None:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
                continue
            kind, payload = item
            try:
                await self.client.publish(topics.topic(self.device_id, kind), payload, 1, False)
            except MQTTError:
                await asyncio.sleep(0.2)
                continue
            if is_urgent:
                if self.acks and self.acks[0] is payload:
                    self.acks.pop(0)
                # else the link dropped meanwhile and spill() moved it to flash: it goes again
                # from there, a harmless duplicate, and nothing else may be popped for it
            else:
                self._sent(item)
            self.sent += 1

    def stop(self):
        self.client.stop()
        self.spill()
        for task in (self.task, self.sender):
            if task:
                task.cancel()


def _vendor_or(spec, provision):
    """The destination named "vendor" without a host is the vendor endpoint of provision.json."""
    if spec.get("name") == "vendor" and "host" not in spec:
        return provision["vendor"]
    return spec


def broker_for(spec, provision, seed, device_id):
    """The Broker of a destination (checked by fp.settings): its TLS settings from fp.pem."""
    spec = _vendor_or(spec, provision)
    host, port = spec["host"], spec.get("port", 1883)
    password = spec.get("password")
    if password is None:  # its own password for each broker, from the seed (docs/security.md)
        password = ids.broker_password(seed, host, port)
    tls = None
    if spec.get("tls"):  # fp.settings refuses a client certificate without it; a CA alone is unused
        from fp import pem  # only a TLS destination needs it (and fp.mqtt_tls), once: dropped after

        try:
            tls = pem.broker_tls(host, spec)
        finally:
            unload("pem")
    return Broker(host, port, spec.get("user") or device_id, password, tls)


def total(destinations, name):
    """The sum of one counter `name` (buffered, dropped, sent...) over `destinations` (name -> Destination)."""
    return sum(getattr(destination, name) for destination in destinations.values())


def apply(device, specs):
    """Start, stop or restart `device.destinations` so that they are those `specs` list.

    `device` gives what each connection announces and where commands go: `identity`, `provision`,
    `board`, `hal` (is the network up), `card()`, `status(state)`, `on_command(data)` and
    `on_update(data)`.
    """
    identity = device.identity
    wanted = {}
    keys = {}
    for spec in specs:
        wanted[spec["name"]] = broker_for(spec, device.provision, identity.seed, identity.device_id)
        # the receipt key its agent signs with (bytes), or None: the PUBACK rule
        key = _vendor_or(spec, device.provision).get("receipts")
        keys[spec["name"]] = bytes.fromhex(key) if key else None
    current = device.destinations
    for name in list(current):
        destination = current[name]
        is_gone = name not in wanted or wanted[name].key() != destination.broker.key()
        if is_gone or keys[name] != destination.receipt_key:
            current.pop(name).stop()  # RAM to flash: a new rule keeps the queue
        if is_gone:
            # what was buffered for a broker the owner removed is not sent to its successor
            ring = "q_" + name + ".bin"
            for path in (ring, ring + ".ptr"):  # the ring and its pointer file (fp.ringbuf)
                try:
                    os.remove(path)
                except OSError:
                    pass
            log("destination %s removed" % name)
    for name, broker in wanted.items():
        if name not in current:
            destination = _start(device, name, broker, keys[name])
            current[name] = destination
            log("destination %s -> %s (%s)" % (name, broker.key(), destination.delivery))


def _start(device, name, broker, receipt_key=None):
    device_id = device.identity.device_id
    # One signed "offline" will per destination and boot: reconnect attempts burn no seq, and a
    # will delivered twice is the same bytes (a harmless duplicate).
    will = (topics.topic(device_id, "status"), device.status("offline"), 1, True)
    command_topic = topics.topic(device_id, "command")
    update_topic = topics.topic(device_id, "update")  # fp.ota
    subscriptions = [(command_topic, 1), (update_topic, 1)]
    receipt_topic = None  # held only by a destination with receipts
    if receipt_key is not None:
        receipt_topic = topics.topic(device_id, "receipt")
        subscriptions.append((receipt_topic, 1))
    built = []  # the destination, once made: the client's callback needs it

    async def on_message(message):
        if message.topic == receipt_topic:
            if built and built[0].receipt_key is not None:
                built[0].on_receipt(bytes(message.payload))
        elif message.topic == command_topic:
            device.on_command(bytes(message.payload))
        elif message.topic == update_topic:
            device.on_update(bytes(message.payload))

    client = MQTTClient(
        broker,
        "fp-%s-%s" % (device_id, name),
        on_message,
        will=will,
        subscriptions=subscriptions,
        keepalive_s=15,
        clean=False,  # persistent session: the broker queues QoS 1 commands while we are away
        log=log,
        link_up=device.hal.network_up,
    )
    ring = RingBuffer("q_" + name + ".bin", device.board.get("queue_slots", _RING_SLOTS))
    if ring.dropped:
        log("destination %s: queue resized, %d oldest messages dropped" % (name, ring.dropped))
    if receipt_key is None:
        destination = Destination(name, broker, client, ring, device_id)
    else:
        from fp.receipted import ReceiptedDestination  # only a destination with receipts loads it

        destination = ReceiptedDestination(name, broker, client, ring, device_id, receipt_key)
    built.append(destination)

    async def on_up():
        # card and status are retained: each broker holds the latest for late subscribers
        connection = client.connects
        try:
            await client.publish(topics.topic(device_id, "card"), device.card(), 1, True)
            await client.publish(topics.topic(device_id, "status"), device.status("online"), 1, True)
        except MQTTError as error:
            # nothing may go out unannounced: start over on a new connection, which announces
            client.reconnect("announce failed: %s" % error)
            return
        destination.announced = connection
        destination.wake.set()

    client.on_up = on_up
    destination.task = asyncio.create_task(client.run())
    destination.sender = asyncio.create_task(destination.send_forever())
    return destination


def announce_card(device, card):
    """Publish a new card (retained) where the link is up; every (re)connect publishes it anyway."""
    card_topic = topics.topic(device.identity.device_id, "card")
    for destination in device.destinations.values():
        if destination.client.is_up:
            asyncio.create_task(destination.client.publish(card_topic, card, 1, True))
