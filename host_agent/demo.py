"""Run the live demo: a vendor broker, the owner's home broker, three devices running the real firmware.

Everything runs on 127.0.0.1. The story of the mission plays on screen: the devices report to the
vendor by default; the owner claims one and reroutes it to their own broker instead (the vendor
stops receiving it), duplicates another to both under stated terms, and forged messages are
refused with their reasons.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from fp import messages, topics
from fp.errors import ProtocolError
from host_agent import wire
from host_agent.errors import UserError
from host_agent.mosquitto import Mosquitto
from host_agent.owner import Owner
from host_agent.paths import BOARDS
from host_agent.simdevice import SimDevice
from host_agent.verifier import Verifier

# (label, sensors): three boards with different sensors and rates.
DEVICES = (
    ("kitchen (bme280, 1 s)", [{"name": "env", "type": "bme280", "interval_s": 1}]),
    (
        "garage (dht22 2 s, adc 3 s)",
        [
            {"name": "air", "type": "dht22", "interval_s": 2},
            {"name": "battery", "type": "adc", "interval_s": 3},
        ],
    ),
    ("attic (chip temp, 1 s)", [{"name": "chip", "type": "internal-temp", "interval_s": 1}]),
)
SHARE_TERMS = {
    "who": "vendor (warranty service)",
    "what": "garage: air temp and hum",
    "why": "warranty analytics",
    "how_long_days": 30,
    "retention_days": 30,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)"
    )
    parser.add_argument("--plain", action="store_true", help="print log lines instead of the live display")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where devices' flash and the owner key live (default: a new temporary folder)",
    )


@dataclass
class Seen:
    """What one recipient has verified from one device."""

    verified: int = 0
    times: list[float] = field(default_factory=list)
    latest: str = ""


class Recipient:
    """A service subscribed to a broker, verifying everything it receives with its own Verifier."""

    def __init__(self, name: str, broker: Mosquitto, events: queue.Queue):
        self.name = name
        self.broker = broker
        self.verifier = Verifier()
        self.seen: dict[str, Seen] = {}
        self.rejections: list[tuple[str, str, str]] = []
        self.acks: dict[bytes, dict] = {}
        self.captured: dict[str, tuple[str, bytes]] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"demo-{name}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("fp/v1/#", qos=1)
        self.client.on_message = lambda c, u, m: events.put((self, m.topic, bytes(m.payload)))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def handle(self, topic: str, payload: bytes) -> str | None:
        """Verify one message; return a line for the story log when it is refused."""
        try:
            if topic.endswith("/card"):
                self.verifier.learn_card(payload, topic)
                return None
            if topic.endswith("/command") or topic.endswith("/endorsement"):
                return None
            message = self.verifier.check(topic, payload)
        except ProtocolError as error:
            if error.reason == "duplicate":
                return None
            device = topic.split("/")[2] if topic.count("/") >= 3 else "?"
            self.rejections.append((device, error.reason, error.detail))
            return f"{self.name} refused a message on {topic[:34]}...: {error.reason} ({error.detail})"
        if message.kind == "reading":
            seen = self.seen.setdefault(message.device_id, Seen())
            seen.verified += 1
            seen.times.append(time.monotonic())
            seen.latest = ", ".join(
                f"{name} {value:.2f} {unit or ''}".strip() for name, unit, value in message.body
            )
            self.captured[message.device_id] = (topic, payload)
        elif message.kind == "ack":
            self.acks[message.body["cmd"]] = message.body
        return None

    def rate(self, device_id: str) -> float:
        seen = self.seen.get(device_id)
        if not seen:
            return 0.0
        now = time.monotonic()
        return len([t for t in seen.times[-50:] if now - t <= 5.0]) / 5.0

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Demo:
    """Owns every process of the demo and plays the story."""

    def __init__(self, data_dir: Path, plain: bool, console: Console):
        self.data_dir = data_dir
        self.plain = plain
        self.console = console
        self.events: queue.Queue = queue.Queue()
        self.story: list[str] = []
        self.started = time.monotonic()
        self.vendor_broker = Mosquitto(self._dir("vendor-broker")).start()
        self.home_broker = Mosquitto(self._dir("home-broker")).start()
        self.vendor = Recipient("vendor", self.vendor_broker, self.events)
        self.home = Recipient("home", self.home_broker, self.events)
        self.owner = Owner(self.data_dir / "owner" / "owner.key")
        self.devices: list[tuple[str, SimDevice, str]] = []
        board = json.loads((BOARDS / "sim.json").read_text())
        for index, (label, sensors) in enumerate(DEVICES):
            device = SimDevice(
                self._dir(f"device-{index}"),
                (self.vendor_broker.host, self.vendor_broker.port),
                {**board, "sensors": sensors},
            )
            device.start()
            self.devices.append((label, device, ""))
        self.devices = [(label, device, device.device_id()) for label, device, _ in self.devices]
        self.routes = {device_id: "vendor" for _, _, device_id in self.devices}
        self.owned: set[str] = set()

    def _dir(self, name: str) -> Path:
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:5.1f} s] {text}"
        self.story.append(line)
        if self.plain:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def pump(self, seconds: float, live: Live | None = None) -> None:
        """Process incoming messages for `seconds`, refreshing the display."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                recipient, topic, payload = self.events.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                pass
            else:
                line = recipient.handle(topic, payload)
                if line:
                    self.say(line)
            if live:
                live.update(self.render())

    def wait_for(self, condition, timeout_s: float, live: Live | None, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise UserError(
                    f"demo: {what} did not happen within {timeout_s:.0f} s (device logs in {self.data_dir})"
                )
            self.pump(0.2, live)

    def command(self, recipient: Recipient, device_id: str, op: str, args: dict, live: Live | None) -> dict:
        """Sign a command, send it through the broker the device listens to, wait for its signed ack."""
        data = self.owner.command(device_id, op, args)
        digest = wire.parse_command(data).digest()
        recipient.client.publish(topics.topic(device_id, "command"), data, qos=1)
        self.wait_for(lambda: digest in recipient.acks, 10, live, f"the ack of {op}")
        ack = recipient.acks[digest]
        self.say(f"device {device_id[:8]} acknowledged {op}: {ack['outcome']} {ack['detail']}".rstrip())
        if ack["outcome"] != "applied":
            raise UserError(f"demo: {op} was refused by the device: {ack['outcome']} {ack['detail']}")
        return ack

    def play(self, live: Live | None, duration_s: float | None) -> None:
        ids_ = [device_id for _, _, device_id in self.devices]
        kitchen, garage, attic = ids_
        self.say("three devices boot and report to the vendor's broker, their factory default")
        self.wait_for(
            lambda: all(self.vendor.seen.get(i) for i in ids_),
            10,
            live,
            "a verified reading from each device",
        )
        self.say(f"first verified readings from all three after {time.monotonic() - self.started:.1f} s")
        self.pump(2, live)

        self.say("owner presses the kitchen device's button and claims it with their key")
        self.devices[0][1].press_button()
        self.command(self.vendor, kitchen, "claim", {"owner": self.owner.public}, live)
        self.owned.add(kitchen)
        home = {"name": "home", "host": self.home_broker.host, "port": self.home_broker.port}
        self.say("owner reroutes the kitchen stream to their own broker INSTEAD OF the vendor's")
        self.command(self.vendor, kitchen, "set-destinations", {"destinations": [home]}, live)
        self.routes[kitchen] = "home only"
        self.wait_for(lambda: self.home.seen.get(kitchen), 10, live, "the kitchen's first reading at home")
        frozen = self.vendor.seen[kitchen].verified
        self.pump(3, live)
        self.say(
            f"vendor readings from the kitchen since the reroute: {self.vendor.seen[kitchen].verified - frozen} (it stopped)"
        )

        self.say("owner claims the garage device and duplicates it to home IN ADDITION TO the vendor")
        self.devices[1][1].press_button()
        self.command(self.vendor, garage, "claim", {"owner": self.owner.public}, live)
        self.owned.add(garage)
        self.command(
            self.vendor, garage, "set-destinations", {"destinations": [{"name": "vendor"}, home]}, live
        )
        self.routes[garage] = "vendor + home"
        self.say("terms of sharing with the vendor: " + ", ".join(f"{k}={v}" for k, v in SHARE_TERMS.items()))
        self.wait_for(lambda: self.home.seen.get(garage), 10, live, "the garage's first reading at home")

        self.say("an attacker publishes a forged reading for the attic device on the vendor's broker")
        attacker = wire.nacl_signer(os.urandom(32))
        forged = messages.encode_reading(attacker, attic, 999, 1, [("chip", "Cel", 99.0)], int(time.time()))
        self.vendor.client.publish(topics.topic(attic, "reading"), forged, qos=1)
        topic, genuine = self.vendor.captured[garage]
        self.say("...and re-publishes a genuine garage reading under the attic's topic")
        self.vendor.client.publish(topics.topic(attic, "reading"), genuine, qos=1)
        self.pump(2, live)
        self._save_samples()
        if duration_s is None:
            self.say("running until Ctrl-C")
            while True:
                self.pump(1, live)
        remaining = duration_s - (time.monotonic() - self.started)
        if remaining > 0:
            self.pump(remaining, live)

    def _save_samples(self) -> None:
        """Leave a card and a reading on disk for the third-party verification the README shows."""
        samples = self._dir("samples")
        device_id = self.devices[2][2]
        state = self.vendor.verifier.devices[device_id]
        (samples / "attic.card").write_bytes(state.card.message.raw)
        (samples / "attic.reading").write_bytes(self.vendor.captured[device_id][1])

    def render(self) -> Group:
        table = Table(title="Firstparty demo: devices", expand=True)
        for column in (
            "device",
            "latest verified reading",
            "readings/s",
            "vendor got",
            "home got",
            "route",
            "owner",
        ):
            table.add_column(column)
        for label, _, device_id in self.devices:
            vendor, home = self.vendor.seen.get(device_id, Seen()), self.home.seen.get(device_id, Seen())
            latest = (home if home.verified and self.routes[device_id] == "home only" else vendor).latest
            table.add_row(
                f"{label}\n{device_id}",
                latest,
                f"{max(self.vendor.rate(device_id), self.home.rate(device_id)):.1f}",
                str(vendor.verified),
                str(home.verified),
                self.routes[device_id],
                "you" if device_id in self.owned else "unclaimed",
            )
        rejections = Table(title="refused messages", expand=True)
        for column in ("recipient", "device", "reason", "detail"):
            rejections.add_column(column)
        for recipient in (self.vendor, self.home):
            for device, reason, detail in recipient.rejections[-5:]:
                rejections.add_row(recipient.name, device, reason, detail)
        return Group(table, rejections, Panel("\n".join(self.story[-10:]), title="story"))

    def stop(self) -> None:
        for _, device, _ in self.devices:
            device.stop()
        for recipient in (self.vendor, self.home):
            recipient.stop()
        self.vendor_broker.stop()
        self.home_broker.stop()

    def summary(self) -> str:
        samples = self.data_dir / "samples"
        return "\n".join(
            [
                "",
                "Where to look next:",
                f"  data folder (device flash, owner key, broker logs): {self.data_dir}",
                f"  the owner key: {self.owner.key_path} (owner id {self.owner.owner_id})",
                "  verify a reading as a third party, holding nothing but the device card:",
                f"    .venv/bin/firstparty verify --card {samples / 'attic.card'} {samples / 'attic.reading'}",
                "  the wire format: docs/protocol.md",
            ]
        )


def run(args: argparse.Namespace) -> int:
    console = Console()
    for binary in ("mosquitto",):
        if not shutil.which(binary) and not Path("/usr/sbin/mosquitto").exists():
            raise UserError("mosquitto is not installed: run `bash scripts/install`")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="firstparty-demo-"))
    demo = Demo(data_dir, args.plain, console)
    try:
        if args.plain:
            demo.play(None, args.duration)
        else:
            with Live(demo.render(), console=console, refresh_per_second=4) as live:
                demo.play(live, args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        demo.stop()
    console.print(demo.summary(), highlight=False, markup=False, soft_wrap=True)
    return 0
