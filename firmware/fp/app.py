"""The device application: sensors -> signed readings -> per-destination queues -> MQTT brokers.

Files in the flash root: `board.json` (the board's data file), `provision.json` (written at flash
time: vendor endpoint, Wi-Fi, optional owner key, HTTP port, safe-mode settings), `config.json`
(changed only by owner commands: destinations and intervals), `key.seed`, `boot.cnt`, `boot.hist`,
`owner.key`, `cmd.cnt`. All three JSON files are checked at boot (fp.settings); a crash loop
starts the device in safe mode (fp.safemode). Reference: docs/device-api.md.
"""

import asyncio
import hashlib
import io
import os
import sys
import time

from fp import ed25519, ids, messages, safemode, storage, topics
from fp.errors import ProtocolError
from fp.mqtt import Broker, MQTTClient, MQTTError
from fp.receipts import Ranges
from fp.ringbuf import RingBuffer

FIRMWARE_VERSION = "0.1.0"
RAM_SLOTS = 8  # messages held in RAM per destination while it is up; beyond, they go to flash
ACK_SLOTS = 4  # acks held in RAM ahead of the queue while the broker is up
# receipts rule: messages sent ahead of the first one not covered by a receipt. The agent sends a
# receipt per RECEIPT_EVERY (32) readings or per second, so 64 keep the link busy meanwhile; and
# it stays far below the recipient's replay window (1024), so what is sent again is never refused.
RECEIPT_WINDOW = 64
RESEND_MS = 2000  # no receipt for this long while messages wait: send them again from the head
COVERED_RANGES = 8  # receipt ranges kept to skip covered messages in the flash ring
OWNER_FILE = storage.OWNER_FILE
COUNTER_FILE = storage.COUNTER_FILE
CONFIG_FILE = storage.CONFIG_FILE
UPDATE_FILE = "update.json"  # fp.ota's: the update state the status reports
SAFE_MODE = "safe-mode"
OPS = ("set-destinations", "set-interval", "get-info", "reboot", "hand-over", "claim")
# Signed answers to refused commands, a token bucket: a burst of this many, then one per
# REFUSAL_ACK_MS. Anyone who may publish on the command topic can send junk, and each ack costs
# a signature (and a slot in every destination's queue); an applied command is always answered.
REFUSAL_ACK_BURST = 8
REFUSAL_ACK_MS = 1000


def log(text):
    print("fp: " + text)


def unload(name):
    """Drop fp.<name>, used once: code loaded from .mpy lives in the heap (fp.settings: ~11 KB)."""
    sys.modules.pop("fp." + name, None)
    package = sys.modules.get("fp")
    if package is not None and hasattr(package, name):
        delattr(package, name)


def heap_in_use():
    """Bytes of heap in use after a collection (MicroPython), or None on CPython."""
    try:
        import gc

        gc.collect()
        return gc.mem_alloc()
    except AttributeError:
        return None


class Destination:
    """One broker with its own connection and its own FIFO of signed messages.

    While the broker is reachable, messages wait in a few RAM slots and cost no flash writes.
    When it is not, they go to this destination's ring buffer in flash (fp.ringbuf), oldest
    first, and drain from there ahead of anything newer. Acks jump the queue while the broker is
    up: the owner waits for them, and a backlog of readings must not make a command time out
    (each kind has its own replay window, so a recipient accepts them out of that order).

    Two delivery rules, one per destination (docs/device-api.md, "Delivery"):
    - "puback": a message leaves the FIFO when its broker acknowledges it (PUBACK).
    - "receipts" (the destination has a receipt key): a message leaves the FIFO only when a
      receipt signed with that key covers its (boot, seq), i.e. once the agent behind the broker
      has committed it. Until then it stays where it is (RAM, or the flash ring once RAM is
      full), up to RECEIPT_WINDOW sent ahead of the first one not covered; after a reconnect, or
      RESEND_MS without a receipt, everything not covered is sent again from the head. A broker
      that crashes with messages it acknowledged therefore loses nothing: they go again.
    """

    def __init__(self, name, broker, client, ring, device_id, receipt_key=None):
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
        self.receipt_key = receipt_key
        self.ram_slots = RAM_SLOTS
        if receipt_key is not None:
            self.receipt_id = ids.id_from_public_key(receipt_key)
            self.covered = Ranges(COVERED_RANGES)
            self.receipt_counter = 0  # the highest accepted; RAM only (see docs/security.md)
            self.receipts = 0
            self.receipts_refused = 0
            self.resent = 0
            self.ram_sent = 0  # ram[:ram_sent] were sent and wait for a receipt
            self.cursor = 0  # the next ring record to send (ring records below it wait)
            self.rewound_for = -1  # the connection on which sending restarted from the head
            self.progress_ms = time.ticks_ms()
            self.ram_slots = RECEIPT_WINDOW + RAM_SLOTS

    @property
    def delivery(self):
        return "puback" if self.receipt_key is None else "receipts"

    @property
    def buffered(self):
        return len(self.ram) + len(self.acks) + self.ring.pending

    @property
    def dropped(self):
        return self.ring.dropped + self.lost

    def put(self, kind, payload):
        if kind == "ack" and self.client.is_up and len(self.acks) < ACK_SLOTS:
            self.acks.append(payload)
        elif self.client.is_up and not self.ring.pending and len(self.ram) < self.ram_slots:
            self.ram.append((kind, payload))
        else:
            self.spill()
            self._to_flash(kind, payload)
        self.wake.set()

    def spill(self):
        """Move RAM messages to flash, oldest first, so a power cut cannot take them."""
        if self.ram and self.receipt_key is not None:
            # those already sent keep waiting for their receipt there, not sent again at once
            self.cursor = self.ring.end + self.ram_sent
            self.ram_sent = 0
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

    # --- receipts -------------------------------------------------------------------------------

    def on_receipt(self, data):
        """Take a receipt: drop what it covers; refuse (and count) any that does not verify."""
        try:
            receipt = messages.parse_receipt(data)
            messages.check_receipt(
                receipt,
                self.receipt_key,
                self.receipt_id,
                self.device_id,
                self.receipt_counter,
                ed25519.verify,
            )
        except ProtocolError as error:
            self.receipts_refused += 1
            log("destination %s: receipt refused: %s" % (self.name, error))
            return
        self.receipt_counter = receipt.counter
        self.receipts += 1
        head = (self.ram[0][1] if self.ram else None, self.ring.head)
        for boot, first, last in receipt.ranges:
            self.covered.add(boot, first, last)
        ram = self.ram
        index = 0
        while index < len(ram):
            if self._is_covered(ram[index][1]):
                self._delivered(*ram[index])
                ram.pop(index)
                if index < self.ram_sent:
                    self.ram_sent -= 1
            else:
                index += 1
        self._trim_ring()
        if head != (self.ram[0][1] if self.ram else None, self.ring.head):
            # the oldest waiting message is covered: the wait of the next one starts now. Only
            # then: receipts for later messages must not hide one the broker lost (RESEND_MS)
            self.progress_ms = time.ticks_ms()
        self.wake.set()

    def _counter(self, payload):
        try:
            return messages.counter_of(payload)
        except ProtocolError:  # never one of ours: nothing can cover it, so it must not block
            return None

    def _delivered(self, kind, payload):
        counter = self._counter(payload) if kind == "reading" else None
        if counter is not None and counter[0] > self.reading_boot:
            self.reading_boot = counter[0]

    def _is_covered(self, payload):
        counter = self._counter(payload)
        return counter is None or self.covered.covers(counter[0], counter[1])

    def _trim_ring(self):
        """Pop the covered messages at the head of the flash ring; return the head's boot."""
        ring = self.ring
        while True:
            item = ring.peek()
            if item is None:
                return None
            counter = self._counter(item[1])
            if counter is not None and not self.covered.covers(counter[0], counter[1]):
                return counter[0]
            self._delivered(*item)
            ring.pop()

    def _rewind(self):
        """Send again, from the head, everything no receipt covers yet."""
        if self.ram_sent or self.cursor > self.ring.head:
            self.resent += 1
        self.ram_sent = 0
        self.cursor = self.ring.head
        self.progress_ms = time.ticks_ms()

    def _next_receipted(self):
        """The next message to send under the receipts rule, or None to wait.

        Nothing of a later boot is sent while one of an earlier boot waits for its receipt: a
        recipient refuses an older boot once it has seen a newer one (the replay rule), so the
        earlier message, sent again, could never be stored.
        """
        connection = self.client.connects
        waiting = self.ram_sent or self.cursor > self.ring.head
        if self.rewound_for != connection or (
            waiting and time.ticks_diff(time.ticks_ms(), self.progress_ms) > RESEND_MS
        ):
            self.rewound_for = connection
            self._rewind()
        if not self.ring.pending:
            index = self.ram_sent
            if index >= len(self.ram) or index >= RECEIPT_WINDOW:
                return None
            item = self.ram[index]
            if index:
                first, this = self._counter(self.ram[0][1]), self._counter(item[1])
                if first and this and first[0] != this[0]:
                    return None
            return item
        ring = self.ring
        head_boot = self._trim_ring()
        if self.cursor < ring.head:
            self.cursor = ring.head
        while self.cursor < ring.end and self.cursor - ring.head < RECEIPT_WINDOW:
            item = ring.read(self.cursor)
            counter = self._counter(item[1]) if item else None
            if counter is None or self.covered.covers(counter[0], counter[1]):
                self.cursor += 1  # torn, overwritten, or covered already: nothing to send
                continue
            if counter[0] != head_boot and self.cursor > ring.head:
                return None
            return item
        return None

    def _sent_receipted(self, item):
        """A message of the receipts rule was acknowledged by the broker: it now waits for its receipt."""
        if not self.ram_sent and self.cursor <= self.ring.head:
            self.progress_ms = time.ticks_ms()  # the wait for a receipt starts now
        if self.ring.pending:
            if self.cursor < self.ring.end:
                self.cursor += 1
        elif self.ram_sent < len(self.ram) and self.ram[self.ram_sent] is item:
            self.ram_sent += 1
        # else a receipt covered it meanwhile, or the link dropped and spill() moved it

    # --- the sender -----------------------------------------------------------------------------

    async def send_forever(self):
        while True:
            item = None
            is_urgent = False
            if self.client.is_up and self.announced == self.client.connects:
                if self.acks:
                    item, is_urgent = ("ack", self.acks[0]), True
                elif self.receipt_key is not None:
                    item = self._next_receipted()
                else:
                    item = self.ram[0] if self.ram else self.ring.peek()
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
            elif self.receipt_key is not None:
                self._sent_receipted(item)
            elif self.ram:
                self.ram.pop(0)
            else:
                self.ring.pop()
            self.sent += 1
            if self.receipt_key is None:  # the PUBACK rule: the broker's acknowledgement delivers it
                self._delivered(kind, payload)

    def stop(self):
        self.client.stop()
        self.spill()
        for task in (self.task, self.sender):
            if task:
                task.cancel()


class Device:
    """The running device: identity, counters, destinations, sensors and the command path.

    `board` and `provision` come checked (fp.settings); `history` is this boot's record
    (fp.safemode): in safe mode the device runs no sensors and no HTTP API, only its
    destinations and the owner command path.
    """

    def __init__(self, hal, board, provision, history=None):
        self.hal = hal
        self.board = board
        self.provision = provision
        self.history = history
        self.is_safe = history is not None and history.is_safe
        self.seed = storage.load_seed()  # also the key of the device's broker passwords
        self.key = ed25519.SigningKey(self.seed)
        self.device_id = ids.id_from_public_key(self.key.public)
        self.boot = storage.next_boot()
        self.seq = 0
        from fp import settings  # unloaded by main() once the device is built

        self.owner_key = settings.load_owner(log, provision.get("owner"))
        self.last_counter = settings.load_counter(log)
        names = [sensor["name"] for sensor in board["sensors"]]
        self.config = settings.check_config(settings.load(CONFIG_FILE, log), names, log)
        self.destinations = {}
        self.refused = 0
        self.unanswered = 0  # refused commands beyond the ack budget: counted, not answered
        self.refusal_acks = REFUSAL_ACK_BURST
        self.refusal_acks_ms = time.ticks_ms()
        self.claim_window_until = 0
        self.claim_window_open = False
        self.latest = {}
        self.interval_changed = {}  # sensor name -> Event: a new interval applies at once
        self.http = None
        self.started_ms = time.ticks_ms()
        self.release_keys = [bytes.fromhex(key) for key in provision.get("release_keys", ())]
        self.ota = None  # the update transfer in progress (fp.ota)
        self.update = storage.load_json(UPDATE_FILE, None)  # the update state in the status (fp.ota)
        if self.update or "slot_a" in sys.path or "slot_b" in sys.path:  # main.py booted a slot
            from fp import ota

            self.update = ota.at_boot(self.update)

    def next_counter(self):
        if self.seq > messages.U32:
            self.boot = storage.next_boot()
            self.seq = 0
        seq = self.seq
        self.seq += 1
        return self.boot, seq

    def now(self):
        return self.hal.time_s()

    def sign_reading(self, measurements):
        boot, seq = self.next_counter()
        return messages.encode_reading(self.key.sign, self.device_id, boot, seq, measurements, self.now())

    def status(self, state):
        boot, seq = self.next_counter()
        info = {
            "buffered": sum(d.buffered for d in self.destinations.values()),
            "dropped": sum(d.dropped for d in self.destinations.values()),
            "refused": self.refused,
            "fw": FIRMWARE_VERSION,
            # the delivery rule of each destination: "receipts" or "puback" (docs/device-api.md)
            "delivery": {name: d.delivery for name, d in self.destinations.items()},
        }
        refused = sum(d.receipts_refused for d in self.destinations.values() if d.receipt_key is not None)
        if refused:
            info["receipts_refused"] = refused
        if self.is_safe:  # the state stays online/offline (protocol section 4); the mode says why
            info["mode"] = SAFE_MODE
        if self.update:
            info["update"] = self.update
        return messages.encode_status(self.key.sign, self.device_id, boot, seq, state, info, self.now())

    def card(self):
        owner_id = ids.id_from_public_key(self.owner_key) if self.owner_key else None
        return messages.encode_card(
            self.key.sign,
            self.key.public,
            self.board.get("name", "sim"),
            FIRMWARE_VERSION,
            self.now(),
            owner_id,
        )

    # --- destinations -------------------------------------------------------------------------

    def receipt_key_for(self, spec):
        """The receipt key this destination's agent signs with (bytes), or None: the PUBACK rule."""
        if spec.get("name") == "vendor" and "host" not in spec:
            spec = self.provision["vendor"]
        key = spec.get("receipts")
        return bytes.fromhex(key) if key else None

    def broker_for(self, spec):
        if spec.get("name") == "vendor" and "host" not in spec:
            spec = self.provision["vendor"]
        host, port = spec["host"], spec.get("port", 1883)
        password = spec.get("password")
        if password is None:  # its own password for each broker, from the seed (docs/security.md)
            password = ids.broker_password(self.seed, host, port)
        return Broker(
            host,
            port,
            spec.get("user") or self.device_id,
            password,
            spec.get("tls", False),
            spec.get("ca"),
            spec.get("client_cert"),
            spec.get("client_key"),
        )

    def local_password(self, host, port):
        """The broker password for host:port, for the owner on the LAN while the claim window is open.

        The window is the owner's physical presence (the button); outside it, None. A claim ends
        the window for claims, not for this: the owner enrols the device with their agent as part
        of claiming it.
        """
        if self.hal.button_pressed():  # pressed since the main loop last looked
            self.open_claim_window()
        if not self.claim_window_until or time.ticks_diff(self.claim_window_until, time.ticks_ms()) < 0:
            return None
        return ids.broker_password(self.seed, host, port)

    def apply_destinations(self):
        wanted = {}
        keys = {}
        for spec in self.config["destinations"]:
            wanted[spec["name"]] = self.broker_for(spec)
            keys[spec["name"]] = self.receipt_key_for(spec)
        for name in list(self.destinations):
            current = self.destinations[name]
            is_gone = name not in wanted or wanted[name].key() != current.broker.key()
            if is_gone or keys[name] != current.receipt_key:
                self.destinations.pop(name).stop()  # RAM to flash: a new rule keeps the queue
            if is_gone:
                # what was buffered for a broker the owner removed is not sent to its successor
                for path in ("q_" + name + ".bin", "q_" + name + ".bin.ptr"):
                    try:
                        os.remove(path)
                    except OSError:
                        pass
                log("destination %s removed" % name)
        for name, broker in wanted.items():
            if name not in self.destinations:
                destination = self._start_destination(name, broker, keys[name])
                self.destinations[name] = destination
                log("destination %s -> %s (%s)" % (name, broker.key(), destination.delivery))

    def _start_destination(self, name, broker, receipt_key=None):
        # One signed "offline" will per destination and boot: reconnect attempts burn no seq, and a
        # will delivered twice is the same bytes (a harmless duplicate).
        will = (topics.topic(self.device_id, "status"), self.status("offline"), 1, True)
        subscriptions = [(topics.topic(self.device_id, "command"), 1)]
        subscriptions.append((topics.topic(self.device_id, "update"), 1))  # fp.ota
        receipt_topic = topics.topic(self.device_id, "receipt")
        if receipt_key is not None:
            subscriptions.append((receipt_topic, 1))
        destination = None

        async def on_message(message):
            if message.topic == receipt_topic:
                if destination is not None and destination.receipt_key is not None:
                    destination.on_receipt(bytes(message.payload))
            else:
                await self.on_message(message)

        client = MQTTClient(
            broker,
            "fp-" + self.device_id + "-" + name,
            on_message,
            will=will,
            subscriptions=subscriptions,
            keepalive_s=15,
            clean=False,  # persistent session: the broker queues QoS 1 commands while we are away
            log=log,
            link_up=self.hal.network_up,
        )
        destination = Destination(
            name, broker, client, RingBuffer("q_" + name + ".bin"), self.device_id, receipt_key
        )

        async def on_up():
            # card and status are retained: each broker holds the latest for late subscribers
            connection = client.connects
            try:
                await client.publish(topics.topic(self.device_id, "card"), self.card(), 1, True)
                await client.publish(topics.topic(self.device_id, "status"), self.status("online"), 1, True)
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

    def publish_everywhere(self, kind, payload):
        for destination in self.destinations.values():
            destination.put(kind, payload)

    # --- commands -------------------------------------------------------------------------------

    async def on_message(self, message):
        if message.topic == topics.topic(self.device_id, "command"):
            self.handle_command(bytes(message.payload))
        elif message.topic == topics.topic(self.device_id, "update"):
            from fp import ota  # loaded only while an update runs (fp.ota unloads itself)

            ota.on_message(self, bytes(message.payload), FIRMWARE_VERSION)

    def may_answer_refusal(self):
        """Take one token from the refusal-ack bucket (refilled one per REFUSAL_ACK_MS); False: none left."""
        now = time.ticks_ms()
        elapsed = time.ticks_diff(now, self.refusal_acks_ms)
        if elapsed >= REFUSAL_ACK_MS or elapsed < 0:  # < 0: idle past half the ticks period
            gained = elapsed // REFUSAL_ACK_MS if elapsed > 0 else REFUSAL_ACK_BURST
            self.refusal_acks = min(REFUSAL_ACK_BURST, self.refusal_acks + gained)
            full = self.refusal_acks == REFUSAL_ACK_BURST
            self.refusal_acks_ms = (
                now if full else time.ticks_add(self.refusal_acks_ms, gained * REFUSAL_ACK_MS)
            )
        if self.refusal_acks <= 0:
            return False
        self.refusal_acks -= 1
        return True

    def handle_command(self, data):
        """Judge and apply one command; return the signed ack (also published everywhere), or None
        for a refused command beyond the ack budget (counted in `refused` and `unanswered`)."""
        digest = hashlib.sha256(data).digest()
        counter = None
        try:
            command = messages.parse_command(data)
            counter = command.counter
            if command.op == "claim":
                outcome, result = self.claim(command)
            else:
                messages.check_command(
                    command, self.owner_key, self.device_id, self.last_counter, self.now(), ed25519.verify
                )
                # a verified owner command is an authenticated lower bound of the time (no NTP)
                self.hal.set_time(command.issued_s)
                outcome, result = "applied", self.apply(command)
                self.last_counter = command.counter
                storage.save_json(COUNTER_FILE, self.last_counter)
            detail = ""
        except ProtocolError as error:
            self.refused += 1
            if not self.may_answer_refusal():
                self.unanswered += 1
                return None  # not logged either: junk must not flood the log
            outcome, detail, result = error.reason, error.detail, None
            log("command refused: %s" % error)
        boot, seq = self.next_counter()
        ack = messages.encode_ack(
            self.key.sign, self.device_id, boot, seq, digest, counter, outcome, detail, result, self.now()
        )
        self.publish_everywhere("ack", ack)
        if outcome == "applied" and result == "rebooting":
            asyncio.create_task(self._reboot_soon())
        return ack

    def open_claim_window(self):
        # monotonic milliseconds: the window must work before the device knows the time of day
        self.claim_window_until = time.ticks_add(
            time.ticks_ms(), 1000 * self.provision.get("claim_window_s", 120)
        )
        self.claim_window_open = True
        log("button: claim window open")

    def claim(self, command):
        if self.owner_key is not None:
            raise ProtocolError("not-owner", "device already has an owner")
        if self.hal.button_pressed():
            self.open_claim_window()
        if not self.claim_window_open or time.ticks_diff(self.claim_window_until, time.ticks_ms()) < 0:
            raise ProtocolError("unclaimed", "press the button to open the claim window")
        key = command.args.get("owner")
        if not isinstance(key, bytes) or len(key) != 32 or ids.id_from_public_key(key) != command.owner_id:
            raise ProtocolError("bad-command", "claim needs the claimant's 32-byte key as owner")
        messages.check_command(command, key, self.device_id, -1, self.now(), ed25519.verify)
        self.hal.set_time(command.issued_s)
        self.claim_window_open = False
        self.set_owner(key)
        return "applied", {"owner": command.owner_id}

    def set_owner(self, key):
        self.owner_key = key
        self.last_counter = 0
        storage.save_json(OWNER_FILE, key.hex())
        storage.save_json(COUNTER_FILE, 0)
        card = self.card()
        for destination in self.destinations.values():
            if destination.client.is_up:  # retained; every (re)connect publishes it again anyway
                asyncio.create_task(
                    destination.client.publish(topics.topic(self.device_id, "card"), card, 1, True)
                )

    def apply(self, command):
        op, args = command.op, command.args
        if op == "set-destinations":
            specs = args.get("destinations")
            if not isinstance(specs, list) or not specs or len(specs) > 4:
                raise ProtocolError("bad-command", "destinations must be a list of 1..4 brokers")
            from fp import settings  # the very check config.json gets at boot

            try:
                names = []
                for spec in specs:
                    found = settings.destination_problem(spec, names)
                    if found is not None:
                        raise ProtocolError("bad-command", "destination %s: expected %s, found %r" % found)
                    names.append(spec["name"])
            finally:
                unload("settings")
            self.config["destinations"] = specs
            storage.save_json(CONFIG_FILE, self.config)
            asyncio.create_task(self._apply_later())
            return {"destinations": [spec["name"] for spec in specs]}
        if op == "set-interval":
            sensor, interval = args.get("sensor"), args.get("interval_s")
            if (
                sensor not in [s["name"] for s in self.board["sensors"]]
                or not isinstance(interval, int)
                or not 1 <= interval <= 86400
            ):
                raise ProtocolError("bad-command", "set-interval needs a fitted sensor and 1..86400 s")
            self.config["intervals"][sensor] = interval
            storage.save_json(CONFIG_FILE, self.config)
            if sensor in self.interval_changed:
                self.interval_changed[sensor].set()
            return {"sensor": sensor, "interval_s": interval}
        if op == "get-info":
            return {
                "fw": FIRMWARE_VERSION,
                "board": self.board.get("name"),
                "boot": self.boot,
                "seq": self.seq,
                "destinations": [d["name"] for d in self.config["destinations"]],
                "intervals": self.config["intervals"],
                "refused": self.refused,
                "unanswered": self.unanswered,
                "dropped": sum(d.dropped for d in self.destinations.values()),
                "buffered": sum(d.buffered for d in self.destinations.values()),
                "flash_writes": sum(d.ring.writes for d in self.destinations.values()),
                "delivery": {name: d.delivery for name, d in self.destinations.items()},
                "receipts": {
                    name: [d.receipts, d.receipts_refused, d.resent]
                    for name, d in self.destinations.items()
                    if d.receipt_key is not None
                },
                "heap_bytes": heap_in_use(),
                "mode": SAFE_MODE if self.is_safe else "normal",
                "unstable_boots": self.history.unstable if self.history else 0,
                "http": [self.http.served, self.http.refused] if self.http else None,
            }
        if op == "reboot":
            return "rebooting"
        if op == "hand-over":
            key = args.get("owner")
            if not isinstance(key, bytes) or len(key) != 32:
                raise ProtocolError("bad-command", "hand-over needs the new owner's 32-byte key")
            self.set_owner(key)
            return {"owner": ids.id_from_public_key(key)}
        raise ProtocolError("bad-command", "unknown operation " + op)

    async def _apply_later(self):
        await asyncio.sleep(0.3)  # let the ack leave through the old destinations first
        self.apply_destinations()

    async def _reboot_soon(self):
        await asyncio.sleep(0.5)
        if self.history:  # a reset the owner asked for is no crash; from safe mode, it tries normal
            self.history.mark_stable()
        for destination in self.destinations.values():
            destination.spill()  # what waits in RAM (for a PUBACK or a receipt) survives the reset
        self.hal.reset()

    # --- sensors --------------------------------------------------------------------------------

    async def sample_forever(self, sensor):
        name = sensor["name"]
        changed = self.interval_changed[name] = asyncio.Event()
        while True:
            try:
                measurements = self.hal.read(sensor)
                reading = self.sign_reading(measurements)
                self.latest[name] = reading
                self.publish_everywhere("reading", reading)
            except Exception as error:  # one failing sensor never stops the others
                log("sensor %s: %s %s" % (name, type(error).__name__, error))
            interval = self.config["intervals"].get(name, sensor["interval_s"])
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), interval)
            except asyncio.TimeoutError:
                pass

    def _check_stable(self, history):
        """Mark this boot stable once a broker has taken a message from it, or after the window."""
        delivered = any(destination.sent for destination in self.destinations.values())
        window_ms = 1000 * history.window_s
        if delivered or time.ticks_diff(time.ticks_ms(), self.started_ms) >= window_ms:
            history.mark_stable()
            log("boot %d is stable" % self.boot)

    async def run(self):
        log("device %s boot %d" % (self.device_id, self.boot))
        history = self.history
        if history is not None and history.is_safe:
            log(
                "safe mode: %d boots in a row did not get stable; no sensors, no HTTP API; the owner's"
                " reboot command (or deleting %s at the REPL) tries a normal boot"
                % (history.unstable - 1, safemode.HISTORY_FILE)
            )
        self.hal.start()
        self.apply_destinations()
        if not self.is_safe:
            for sensor in self.board["sensors"]:
                asyncio.create_task(self.sample_forever(sensor))
            if self.provision.get("http_port"):
                from fp.http_api import HttpApi  # loaded only when on: its code lives in the heap

                self.http = HttpApi(self, log)
                await self.http.start(self.hal.lan_host, self.provision["http_port"])
        while True:
            self.hal.feed()
            if self.hal.button_pressed():
                self.open_claim_window()
            if history is not None and not history.is_safe and not history.is_stable:
                self._check_stable(history)
            if (  # a release on probation is confirmed by its first delivered reading (fp.ota)
                self.update
                and self.update.get("state") == "installed-on-probation"
                and any(destination.reading_boot >= self.boot for destination in self.destinations.values())
            ):
                from fp import ota

                ota.check_probation(self)
            await asyncio.sleep(0.2)


def load_hal(board, provision):
    if board.get("port") == "esp32":
        from fp.hal_esp32 import Esp32Board

        return Esp32Board(board, provision)
    from fp.hal_sim import SimBoard

    return SimBoard(board)


def crash_line(error):
    """Return the traceback of `error` on one line, as the log keeps it."""
    buffer = io.StringIO()
    sys.print_exception(error, buffer)  # pyright: ignore[reportArgumentType] (MicroPython takes any stream)
    text = buffer.getvalue()  # pyright: ignore[reportAttributeAccessIssue] (the stubs' StringIO has no getvalue)
    lines = [line.strip() for line in text.strip().split("\n")]
    return " | ".join(lines[-1:] + lines[:-1])  # what happened first, then where


def load_settings():
    """Return (board, provision) checked, or exit with one line when the device cannot run."""
    from fp import settings

    board = settings.check_board(settings.load(storage.BOARD_FILE, log), log)
    provision = None
    if board is not None:
        raw = settings.load(storage.PROVISION_FILE, log)
        provision = settings.check_provision(raw, board["port"], log)
    if board is None or provision is None:
        log("board.json and provision.json (with a vendor endpoint) are required in the flash root")
        sys.exit(1)
    return board, provision


def main():
    """Run the device; a crash is logged on one line and resets the board, except in safe mode.

    In safe mode a crash returns to the REPL instead, and so does Ctrl-C in either mode: the
    REPL stays reachable.
    """
    hal = None
    history = None
    try:
        # The 12 KB Ed25519 table needs one contiguous block: take it while the heap is still
        # empty, before boot's short-lived allocations (settings, JSON) fragment it.
        ed25519.load_table()
        board, provision = load_settings()
        hal = load_hal(board, provision)
        record = safemode.BootHistory(provision["safe_mode_boots"], provision["safe_mode_window_s"])
        record.start(hal.time_s(), hal.is_power_on_boot())
        history = record  # from here on, a crash counts toward the crash loop
        device = Device(hal, board, provision, history)
        unload("settings")
        asyncio.run(device.run())
    except KeyboardInterrupt:
        log("interrupted: the REPL is yours")
        if hal:
            hal.release()
    except Exception as error:
        log("crash: " + crash_line(error))
        if hal is None or history is None or history.is_safe:
            if hal:
                hal.release()
            return
        hal.reset()  # counted: this boot never got stable


if __name__ == "__main__":
    main()
