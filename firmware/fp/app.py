"""The device application: sensors -> signed readings -> per-destination queues -> MQTT brokers.

Files in the flash root: `board.json` (the board's data file), `provision.json` (written at flash
time: vendor endpoint, Wi-Fi, optional owner key), `config.json` (changed only by owner commands:
destinations and intervals), `key.seed`, `boot.cnt`, `owner.key`, `cmd.cnt`.
"""

import asyncio
import hashlib
import sys

from fp import ed25519, ids, messages, storage, topics
from fp.errors import ProtocolError
from fp.mqtt import Broker, MQTTClient, MQTTError

FIRMWARE_VERSION = "0.1.0"
MAX_QUEUE = 256  # readings held in RAM per destination while it is down
DEFAULT_INTERVAL_S = 10
OWNER_FILE = "owner.key"
COUNTER_FILE = "cmd.cnt"
CONFIG_FILE = "config.json"
OPS = ("set-destinations", "set-interval", "get-info", "reboot", "hand-over", "claim")


def log(text):
    print("fp: " + text)


class Destination:
    """One broker with its own connection and its own FIFO of signed messages."""

    def __init__(self, name, broker, client):
        self.name = name
        self.broker = broker
        self.client = client
        self.queue = []
        self.dropped = 0
        self.sent = 0
        self.wake = asyncio.Event()
        self.task = None
        self.sender = None

    def put(self, topic, payload, retain=False):
        if len(self.queue) >= MAX_QUEUE:
            self.queue.pop(0)  # drop the oldest, and say so in status
            self.dropped += 1
        self.queue.append((topic, payload, retain))
        self.wake.set()

    async def send_forever(self):
        while True:
            if not self.queue or not self.client.is_up:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
                continue
            topic, payload, retain = self.queue[0]
            try:
                await self.client.publish(topic, payload, 1, retain)
            except MQTTError:
                await asyncio.sleep(0.2)
                continue
            self.queue.pop(0)
            self.sent += 1

    def stop(self):
        self.client.stop()
        for task in (self.task, self.sender):
            if task:
                task.cancel()


class Device:
    """The running device: identity, counters, destinations, sensors and the command path."""

    def __init__(self, hal, board, provision):
        self.hal = hal
        self.board = board
        self.provision = provision
        self.key = ed25519.SigningKey(storage.load_seed())
        self.device_id = ids.id_from_public_key(self.key.public)
        self.boot = storage.next_boot()
        self.seq = 0
        owner = storage.load_json(OWNER_FILE, None) or provision.get("owner")
        self.owner_key = bytes.fromhex(owner) if owner else None
        self.last_counter = storage.load_json(COUNTER_FILE, 0)
        self.config = self._load_config()
        self.destinations = {}
        self.refused = 0
        self.claim_window_until = 0
        self.latest = {}

    def _load_config(self):
        config = storage.load_json(CONFIG_FILE, {})
        if not isinstance(config.get("destinations"), list) or not config["destinations"]:
            if "destinations" in config:
                log("config.json: destinations must be a non-empty list; using the vendor only")
            config["destinations"] = [{"name": "vendor"}]
        if not isinstance(config.get("intervals"), dict):
            config["intervals"] = {}
        return config

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
            "buffered": sum(len(d.queue) for d in self.destinations.values()),
            "dropped": sum(d.dropped for d in self.destinations.values()),
            "refused": self.refused,
            "fw": FIRMWARE_VERSION,
        }
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

    def broker_for(self, spec):
        if spec.get("name") == "vendor" and "host" not in spec:
            spec = self.provision["vendor"]
        return Broker(
            spec["host"],
            spec.get("port", 1883),
            spec.get("user"),
            spec.get("password"),
            spec.get("tls", False),
            spec.get("ca"),
        )

    def apply_destinations(self):
        wanted = {}
        for spec in self.config["destinations"]:
            wanted[spec["name"]] = self.broker_for(spec)
        for name in list(self.destinations):
            if name not in wanted or wanted[name].key() != self.destinations[name].broker.key():
                self.destinations.pop(name).stop()
                log("destination %s removed" % name)
        for name, broker in wanted.items():
            if name not in self.destinations:
                self.destinations[name] = self._start_destination(name, broker)
                log("destination %s -> %s" % (name, broker.key()))

    def _start_destination(self, name, broker):
        # One signed "offline" will per destination and boot: reconnect attempts burn no seq, and a
        # will delivered twice is the same bytes (a harmless duplicate).
        will = (topics.topic(self.device_id, "status"), self.status("offline"), 1, True)
        client = MQTTClient(
            broker,
            "fp-" + self.device_id + "-" + name,
            self.on_message,
            will=will,
            subscriptions=[(topics.topic(self.device_id, "command"), 1)],
            keepalive_s=15,
            log=log,
            link_up=self.hal.network_up,
        )
        destination = Destination(name, broker, client)

        async def on_up():
            # card and status are retained: each broker holds the latest for late subscribers
            await client.publish(topics.topic(self.device_id, "card"), self.card(), 1, True)
            await client.publish(topics.topic(self.device_id, "status"), self.status("online"), 1, True)

        client.on_up = on_up
        destination.task = asyncio.create_task(client.run())
        destination.sender = asyncio.create_task(destination.send_forever())
        return destination

    def publish_everywhere(self, kind, payload):
        topic = topics.topic(self.device_id, kind)
        for destination in self.destinations.values():
            destination.put(topic, payload)

    # --- commands -------------------------------------------------------------------------------

    async def on_message(self, topic, payload):
        if topic == topics.topic(self.device_id, "command"):
            self.handle_command(bytes(payload))

    def handle_command(self, data):
        """Judge and apply one command; return the signed ack (also published everywhere)."""
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
                outcome, result = "applied", self.apply(command)
                self.last_counter = command.counter
                storage.save_json(COUNTER_FILE, self.last_counter)
            detail = ""
        except ProtocolError as error:
            self.refused += 1
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

    def claim(self, command):
        if self.owner_key is not None:
            raise ProtocolError("not-owner", "device already has an owner")
        if self.hal.button_pressed():
            self.claim_window_until = self.now() + self.provision.get("claim_window_s", 120)
        if self.now() > self.claim_window_until:
            raise ProtocolError("unclaimed", "press the button to open the claim window")
        key = command.args.get("owner")
        if not isinstance(key, bytes) or len(key) != 32 or ids.id_from_public_key(key) != command.owner_id:
            raise ProtocolError("bad-command", "claim needs the claimant's 32-byte key as owner")
        messages.check_command(command, key, self.device_id, -1, self.now(), ed25519.verify)
        self.set_owner(key)
        return "applied", {"owner": command.owner_id}

    def set_owner(self, key):
        self.owner_key = key
        self.last_counter = 0
        storage.save_json(OWNER_FILE, key.hex())
        storage.save_json(COUNTER_FILE, 0)
        self.publish_everywhere("card", self.card())

    def apply(self, command):
        op, args = command.op, command.args
        if op == "set-destinations":
            specs = args.get("destinations")
            if not isinstance(specs, list) or not specs or len(specs) > 4:
                raise ProtocolError("bad-command", "destinations must be a list of 1..4 brokers")
            for spec in specs:
                if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                    raise ProtocolError("bad-command", "each destination needs a name")
                try:
                    self.broker_for(spec)
                except (ValueError, KeyError) as error:
                    raise ProtocolError("bad-command", "destination %s: %s" % (spec.get("name"), error))
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
                "dropped": sum(d.dropped for d in self.destinations.values()),
                "buffered": sum(len(d.queue) for d in self.destinations.values()),
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
        self.hal.reset()

    # --- sensors --------------------------------------------------------------------------------

    async def sample_forever(self, sensor):
        name = sensor["name"]
        while True:
            try:
                measurements = self.hal.read(sensor)
                reading = self.sign_reading(measurements)
                self.latest[name] = reading
                self.publish_everywhere("reading", reading)
            except Exception as error:  # one failing sensor never stops the others
                log("sensor %s: %s %s" % (name, type(error).__name__, error))
            interval = self.config["intervals"].get(name, sensor.get("interval_s", DEFAULT_INTERVAL_S))
            await asyncio.sleep(interval)

    async def run(self):
        log("device %s boot %d" % (self.device_id, self.boot))
        self.apply_destinations()
        for sensor in self.board["sensors"]:
            asyncio.create_task(self.sample_forever(sensor))
        while True:
            if self.hal.button_pressed():
                self.claim_window_until = self.now() + self.provision.get("claim_window_s", 120)
                log("button: claim window open")
            await asyncio.sleep(0.2)


def load_hal(board):
    if board.get("port") == "unix" or board.get("name") == "sim":
        from fp.hal_sim import SimBoard

        return SimBoard(board)
    raise ValueError("no hardware layer for board %s in this build" % board.get("name"))


def main():
    board = storage.load_json("board.json", None)
    provision = storage.load_json("provision.json", None)
    if not board or not provision or "vendor" not in provision:
        log("board.json and provision.json (with a vendor endpoint) are required in the flash root")
        sys.exit(1)
    device = Device(load_hal(board), board, provision)
    try:
        asyncio.run(device.run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
