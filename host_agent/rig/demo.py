"""Run the live demo: the vendor's service, the owner's agent and three devices on the real firmware.

Everything runs on 127.0.0.1 and is the real system: the agent in the vendor role with its embedded
mosquitto (the vendor's broker), the owner's agent (its embedded mosquitto, SQLite store and HTTP
API), and three sim boards running the firmware under the MicroPython unix port. Every broker client
logs in: each device with its own password per broker, the owner's agent on the vendor's broker
with the relay account the vendor gave it. The story of the mission plays on
screen: the devices report to the vendor by default; the owner claims one and reroutes it to their
own service instead (the vendor stops receiving it), duplicates another to both under stated
terms, and forged messages are refused with their reasons. Every recipient agrees to the owner's
terms first (docs/agreements.md): the vendor's agent countersigns the baseline agreement for each
claimed device, the co-op (no agent: a key of its own) countersigns the garage's terms before any
reading leaves, and a data broker that asks to resell is refused and gets nothing. Every owner action goes through the
agent's HTTP API, as a user's own scripts would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from fp import ids, messages, topics
from host_agent import config as agent_config
from host_agent import wire
from host_agent.api import tokens
from host_agent.api.client import write_runtime
from host_agent.bus.mosquitto import free_port
from host_agent.console import auth
from host_agent.errors import UserError
from host_agent.owner import Owner
from host_agent.paths import BOARDS
from host_agent.rig.simdevice import SimDevice
from host_agent.service import Agent, start_in_thread
from host_agent.store.base import reading_values
from host_agent.terms import records, roster, signed

# (label, sensors): three boards with different sensors and rates.
DEVICES = (
    ("kitchen (bme280, 1 s)", [{"name": "env", "type": "bme280", "interval_s": 1}]),
    (
        "garage (dht22 2 s, adc 3 s)",
        [
            {"name": "air", "type": "dht22", "interval_s": 2, "pin": 4},
            {"name": "battery", "type": "adc", "interval_s": 3, "pin": 35},
        ],
    ),
    ("attic (chip temp, 1 s)", [{"name": "chip", "type": "internal-temp", "interval_s": 1}]),
)
API_PORT = 8480  # the agent's default; another free port when it is taken
FIRST_READING_S = 10
RATE_WINDOW_S = 5.0
T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)"
    )
    parser.add_argument("--plain", action="store_true", help="print log lines instead of the live display")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the agents, brokers and devices' flash live (default: a new temporary folder)",
    )


def _port_or_free(port: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


class Attacker:
    """Someone with a device account of their own on the vendor's broker, sending what no device signed."""

    def __init__(self, vendor: Agent):
        assert vendor.broker is not None
        self.seed = os.urandom(32)
        self.sign = wire.nacl_signer(self.seed)
        self.public = wire.nacl_public_key(self.seed)
        self.device_id = ids.id_from_public_key(self.public)
        host, port = vendor.devices_endpoint()
        password = ids.broker_password(self.seed, host, port)
        vendor.broker.add_device(self.device_id, password)  # any customer's device has an account
        self.port = vendor.broker.port
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-attacker")
        self.client.username_pw_set(self.device_id, password)
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        card = messages.encode_card(self.sign, self.public, "sim", "0.1.0", int(time.time()), None)
        self.publish(topics.topic(self.device_id, "card"), card)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def anonymous_refusal(self) -> str:
        """Connect without an account, as the vendor service's own client id; return the broker's answer."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="vendor-service", clean_session=False)
        answer: list[str] = []
        client.on_connect = lambda c, u, f, reason, p: answer.append(str(reason))
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        deadline = time.monotonic() + 5
        while not answer and time.monotonic() < deadline:
            time.sleep(0.05)
        client.loop_stop()
        client.disconnect()
        return answer[0] if answer else "no answer"

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Demo:
    """Owns every process of the demo, plays the story and renders what the agents hold."""

    def __init__(self, data_dir: Path, plain: bool, console: Console):
        self.data_dir = data_dir
        self.plain = plain
        self.console = console
        self.story: list[str] = []
        self.started = time.monotonic()
        self.live: Live | None = None
        self.routes: dict[str, str] = {}
        self.owned: set[str] = set()
        self.seen_rejections = {"vendor": 0, "home": 0}
        self.rejections: list[tuple[str, str, str, str]] = []
        self._lock = threading.Lock()
        self._cleanups: list[
            Callable[[], None]
        ] = []  # what start() brought up, undone newest first by stop()
        self.devices: list[tuple[str, SimDevice]] = []
        self.ids: list[str] = []

    def start(self) -> None:
        """Bring everything up; whatever started is stopped by stop(), even if a later step fails."""
        self.vendor = self._start_agent(self._vendor_config())
        assert self.vendor.broker is not None
        self.vendor_endpoint = self.vendor.devices_endpoint()
        # the vendor gives the owner's agent a relay account: the owner's devices' readings only
        home_owner = Owner(self._dir("home") / "owner.key")
        relay = self._on_loop(self.vendor, self.vendor.add_relay("home", home_owner.owner_id))
        self.home_config_path = self._write_home_config(relay.username, relay.password)
        self.home = self._start_agent(agent_config.load(self.home_config_path))
        write_runtime(self.home.config, self.home.api_port or API_PORT, self.home.store)  # for the CLI
        self.api_url = f"http://127.0.0.1:{self.home.api_port}"
        self.token = tokens.issue(self.home.store, "demo-" + os.urandom(3).hex(), "admin")
        self.api = httpx.Client(
            base_url=self.api_url, headers={"authorization": f"Bearer {self.token}"}, timeout=30
        )
        self._cleanups.append(self.api.close)
        self.console_link = auth.link_url(self.api_url, auth.create_link_code(self.home.store, self.token))
        self.attacker = Attacker(self.vendor)
        self._cleanups.append(self.attacker.stop)
        board = json.loads((BOARDS / "sim.json").read_text())
        for index, (label, sensors) in enumerate(DEVICES):
            device = SimDevice(
                self._dir(f"device-{index}"), self.vendor_endpoint, {**board, "sensors": sensors}
            )
            self._cleanups.append(device.stop)
            self.devices.append((label, device.start()))
        self.ids = [device.device_id() for _, device in self.devices]
        for _, device in self.devices:  # the vendor's factory step: `firstparty flash --config vendor.toml`
            device.enrol(self.vendor)
        self.routes = dict.fromkeys(self.ids, "vendor (default)")

    # --- set-up -------------------------------------------------------------------------------

    def _start_agent(self, config: agent_config.Config) -> Agent:
        agent, thread = start_in_thread(config)

        def stop() -> None:
            agent.request_stop()
            thread.join(15)

        self._cleanups.append(stop)
        return agent

    @staticmethod
    def _on_loop(agent: Agent, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run one of an agent's coroutines on its loop, from this thread, and return its result."""
        assert agent.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, agent.loop).result(30)

    def _dir(self, name: str) -> Path:
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _vendor_config(self) -> agent_config.Config:
        """The vendor's service: the same agent in the vendor role, on the vendor's broker."""
        return agent_config.from_dict(
            {
                "role": "vendor",
                "data_dir": str(self._dir("vendor")),
                "broker": {"embedded": True, "port": 0, "client_id": "vendor-service"},
                "api": {"port": 0},
            }
        )

    def _write_home_config(self, relay_username: str, relay_password: str) -> Path:
        """The owner's agent: a real config file, so `firstparty serve --config` runs it again."""
        home = self._dir("home")
        path = home / "firstparty.toml"
        path.write_text(
            "# written by `firstparty demo`: the owner's agent of the demo (docs/configuration.md)\n"
            'role = "owner"\n'
            'data_dir = "."\n'
            'files_dir = ".."  # the routes of the demo write in its folder (home/, coop/)\n'
            "[broker]\n"
            "embedded = true\n"
            "port = 0\n"
            'client_id = "home-agent"\n'
            f'relay_brokers = ["{self.vendor_endpoint[0]}:{self.vendor_endpoint[1]}"]\n'
            f'relay_username = "{relay_username}"\n'
            f'relay_password = "{relay_password}"\n'
            "[api]\n"
            f"port = {_port_or_free(API_PORT)}\n"
            "[terms]\n"  # a claimed device's terms go to the vendor's agent (docs/agreements.md)
            f'vendor_api = "http://127.0.0.1:{self.vendor.api_port}"\n'
        )
        return path

    # --- what the agents hold -----------------------------------------------------------------

    @staticmethod
    def _count(agent: Agent, device_id: str, since_s: float = 0.0) -> int:
        return agent.store.count_readings(device_id, since_s)

    @staticmethod
    def _latest(agent: Agent, device_id: str) -> str:
        latest = agent.store.latest_reading(device_id)
        if latest is None:
            return ""
        return ", ".join(
            f"{name} {value:.1f} {unit or ''}".strip() for name, unit, value in reading_values(*latest)
        )

    def _rate(self, device_id: str) -> float:
        since = time.time() - RATE_WINDOW_S
        return max(self._count(a, device_id, since) for a in (self.vendor, self.home)) / RATE_WINDOW_S

    def _collect_rejections(self) -> None:
        """Tell the story of every message an agent refused (its rejections table) since the last look."""
        for who, agent in (("vendor", self.vendor), ("home", self.home)):
            rows = agent.store.rejections_after(self.seen_rejections[who])
            for row_id, reason, topic, detail in rows:
                self.seen_rejections[who] = row_id
                if reason == "duplicate":
                    continue  # QoS 1 redelivery of something already stored: not an attack
                device = topic.split("/")[2] if topic.count("/") >= 3 else "?"
                self.rejections.append((who, device, reason, detail))
                where = "the vendor's service" if who == "vendor" else "your agent"
                self.say(f"{who} refused a message on {topic[:34]}...: {reason} ({detail}) [{where}]")

    # --- the story ----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:5.1f} s] {text}"
        with self._lock:
            self.story.append(line)
        if self.plain:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def pump(self, seconds: float) -> None:
        """Let the system run for `seconds`, refreshing the display and the rejection log."""
        deadline = time.monotonic() + seconds
        while True:
            self._collect_rejections()
            if self.live:
                self.live.update(self.render())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 0.25))

    def wait_for(self, condition: Callable[[], T], timeout_s: float, what: str) -> T:
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise UserError(
                    f"demo: {what} did not happen within {timeout_s:.0f} s (logs in {self.data_dir})"
                )
            self.pump(0.2)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.api.request(method, path, json=body)
        if response.status_code >= 400:
            raise UserError(f"demo: the agent refused {method} {path}: {response.text}")
        return response.json()

    def command(self, device_id: str, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST /devices/{id}/commands: the agent signs, sends, and waits for the device's ack."""
        result = self.call("POST", f"/devices/{device_id}/commands", {"op": op, "args": args or {}})
        self._say_ack(device_id, result)
        return result

    def _say_ack(self, device_id: str, result: dict[str, Any]) -> None:
        self.say(
            f"device {device_id[:8]} acknowledged {result['op']}: {result['outcome']} {result['detail']}".rstrip()
        )
        if result["outcome"] != "applied":
            raise UserError(f"demo: {result['op']} was refused by the device: {result['outcome']}")

    def claim(self, index: int) -> str:
        label, device = self.devices[index]
        device_id = self.ids[index]
        name = label.split()[0]
        self.say(f"owner presses the {name} device's button and claims it with their key")
        self.wait_for(lambda: self.home.store.device(device_id), 10, f"the {name} device at your agent")
        device.press_button()
        # its password for the owner's broker crosses the owner's LAN, never the vendor's broker
        self.call("POST", "/devices/enrol", {"device_url": f"http://127.0.0.1:{device.http_port}"})
        self.say(f"your agent enrolled the {name} device from its LAN API (claim window open)")
        self.command(device_id, "claim")
        self.call("POST", f"/pending/{device_id}/accept")
        self.home.store.rename(device_id, name)
        self.owned.add(device_id)
        return device_id

    def play(self, duration_s: float | None) -> None:
        kitchen, garage, attic = self.ids
        self.say(f"your agent's API: {self.api_url}/docs (the CLI works too, see the end)")
        self.say(f"your console: {self.api_url}/ - sign in once with {self.console_link}")
        self.say("three devices boot and report to the vendor's service, their factory default")
        self.wait_for(
            lambda: all(self._count(self.vendor, i) for i in self.ids),
            FIRST_READING_S,
            "a verified reading from each device at the vendor",
        )
        self.say(f"first verified readings from all three after {time.monotonic() - self.started:.1f} s")
        self.pump(2)

        self.claim(0)
        self.vendor_terms(kitchen, "kitchen")
        home_path = self.data_dir / "home" / "kitchen.jsonl"
        self.say("owner reroutes the kitchen stream to their own service INSTEAD OF the vendor's")
        result = self.call(
            "POST",
            "/routes",
            {
                "name": "kitchen-home",
                "destination": {"type": "file", "path": str(home_path)},
                "devices": [kitchen],
                "mode": "instead-of",
                "terms": {"recipient": "me", "purpose": "my own records"},
            },
        )
        for outcome in result.get("device_commands", []):
            self._say_ack(outcome["device_id"], outcome)
        self.routes[kitchen] = "you only, not the vendor"
        since = time.time() + 1.0  # the vendor's last in-flight readings may land in this second
        self.wait_for(lambda: self._count(self.home, kitchen, since), 10, "the kitchen's readings at home")
        self.pump(3)
        self.say(
            "vendor readings from the kitchen since the reroute: "
            f"{self._count(self.vendor, kitchen, since)} (it stopped)"
        )

        self.claim(1)
        self.vendor_terms(garage, "garage")
        expires = int(time.time()) + 30 * 86400
        terms = {
            "recipient": "energy co-op",
            "purpose": "energy-planning",
            "expires_s": expires,
            "retention_days": 30,
        }
        self.say("owner duplicates the garage's air readings to a co-op IN ADDITION TO the vendor")
        result = self.call(
            "POST",
            "/routes",
            {
                "name": "garage-coop",
                "destination": {"type": "file", "path": str(self.data_dir / "coop" / "garage.jsonl")},
                "devices": [garage],
                "metrics": ["temp", "hum"],
                "mode": "in-addition-to",
                "terms": terms,
                "needs_agreement": True,
            },
        )
        self.say(
            "terms, signed by the owner in a share grant the co-op can verify: "
            f"who={terms['recipient']}, what=garage temp and hum, why={terms['purpose']}, "
            f"how long=30 days, retention asked={terms['retention_days']} days"
            f" (grant {len(bytes.fromhex(result['grant_hex']))} bytes)"
        )
        self.routes[garage] = "vendor + you + co-op"
        (self._dir("samples") / "garage-coop.grant").write_bytes(bytes.fromhex(result["grant_hex"]))
        self.say("the co-op route waits for the co-op to agree: its readings are held, none has left")
        coop = self.offline_answer("community-energy@1", "garage-coop", "co-op", "accept")
        (self._dir("samples") / "garage-coop.agreement").write_bytes(
            self.api.get(f"/agreements/{coop}/record").content
        )
        self.wait_for(lambda: self._coop_lines() > 0, 15, "the garage's readings forwarded to the co-op")
        self.say(f"the co-op has its first signed readings ({self._coop_lines()}), byte for byte as signed")

        self.say(
            "an attacker connects to the vendor's broker without an account, as the vendor service: "
            + self.attacker.anonymous_refusal()
        )
        self.say(
            "with a device account of their own, they publish under the attic's topic: the broker drops it"
        )

        self.say("a data broker asks for the garage's readings too; the owner proffers research use")
        self.call(
            "POST",
            "/routes",
            {
                "name": "garage-broker",
                "destination": {"type": "file", "path": str(self._broker_path())},
                "devices": [garage],
                "metrics": ["temp", "hum"],
                "terms": {"recipient": "data broker", "purpose": "research", "retention_days": 30},
                "needs_agreement": True,
            },
        )
        self.offline_answer(
            "community-energy@1", "garage-broker", "data-broker", "alternative", "resale-same-terms@1"
        )

        forger = wire.nacl_signer(os.urandom(32))
        forged = messages.encode_reading(forger, attic, 999, 1, [("chip", "Cel", 99.0)], int(time.time()))
        self.attacker.publish(topics.topic(attic, "reading"), forged)
        self.say("...a reading for their own device, signed with another key")
        own = self.attacker.device_id
        forged = messages.encode_reading(forger, own, 999, 1, [("chip", "Cel", 99.0)], int(time.time()))
        self.attacker.publish(topics.topic(own, "reading"), forged)
        latest = self.vendor.store.latest_reading(garage)
        assert latest is not None, "the vendor holds the garage's readings by now"
        genuine = latest[1]
        self.say("...and a genuine garage reading under their own topic")
        self.attacker.publish(topics.topic(own, "reading"), bytes(genuine))
        self.wait_for(
            lambda: {"bad-signature", "wrong-topic"} <= {r[2] for r in self.rejections if r[0] == "vendor"},
            10,
            "the vendor refusing both",
        )
        forged_stored = self.vendor.store.count_readings(attic, boot=999)
        self.say(f"readings stored for the attic from the attacker: {forged_stored}")
        self._save_samples()
        self.say(f"readings the data broker got: {self._broker_lines()} (offered nothing it may resell)")
        if duration_s is None:
            self.say("running until Ctrl-C")
            while True:
                self.pump(1)
        remaining = duration_s - (time.monotonic() - self.started)
        if remaining > 0:
            self.pump(remaining)

    def vendor_terms(self, device_id: str, name: str) -> None:
        """Tell the agreement the owner's agent proffered the vendor's agent when the device was claimed."""
        found = self.wait_for(
            lambda: [
                a for a in self.call("GET", "/agreements") if a["devices"] == [device_id] and a["answered_s"]
            ],
            10,
            f"the vendor's answer to the {name}'s terms",
        )[0]
        theirs = records.get(self.vendor.store, found["id"])
        mine = self.api.get(f"/agreements/{found['id']}/record").content
        is_same = theirs is not None and records.record_bytes(theirs) == mine
        self.say(
            f"your agent proffered {found['agreement']} (only to deliver the service) for the {name} to the "
            f"vendor's agent: {found['state']}, countersigned by {found['recipient_id'][:8]}; both records "
            f"{'identical' if is_same else 'DIFFER'} ({len(mine)} bytes)"
        )

    def offline_answer(
        self, agreement: str, route: str, who: str, decision: str, alternative: str | None = None
    ) -> str:
        """A recipient running nothing of ours: a key of its own, and `firstparty terms accept|offer`."""
        proffered = self.call("POST", "/agreements", {"agreement": agreement, "route": route})
        self.say(
            f"owner proffers {agreement} to the {who}: {','.join(proffered['metrics'])} for "
            f"{proffered['purpose']}, kept {proffered['retention_days']} days, signed by the owner key"
        )
        key = Owner(self._dir(who) / "terms.key")
        record = records.parse_record(self.api.get(f"/agreements/{proffered['id']}/record").content)
        ref = roster.parse_ref(alternative) if alternative else None
        answer = signed.encode_answer(
            key, record["proffer"], decision, int(time.time()), ref, f"the {who} decides"
        )
        result = self.call("POST", f"/agreements/{proffered['id']}/answer", {"message_hex": answer.hex()})
        if decision == "accept":
            self.say(f"the {who} countersigns with its own key {key.owner_id[:8]}: {result['state']}")
        else:
            self.say(f"the {who} will not take these terms and asks for {alternative} (resale) instead")
            self.say(
                f"your agent {result['state']} the counter-offer: the owner does not accept {alternative}"
            )
        return proffered["id"]

    def _broker_path(self) -> Path:
        return self._dir("broker") / "garage.jsonl"

    def _broker_lines(self) -> int:
        path = self._broker_path()
        return len(path.read_text().splitlines()) if path.exists() else 0

    def _coop_lines(self) -> int:
        path = self.data_dir / "coop" / "garage.jsonl"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def _save_samples(self) -> None:
        """Leave a card and a reading on disk for the third-party verification the README shows."""
        samples = self._dir("samples")
        attic = self.ids[2]
        card = self.vendor.store.card(attic)
        reading = self.vendor.store.latest_reading(attic)
        if card and reading:
            (samples / "attic.card").write_bytes(bytes(card))
            (samples / "attic.reading").write_bytes(reading[1])
        garage_card = self.home.store.card(self.ids[1])
        if garage_card:
            (samples / "garage.card").write_bytes(bytes(garage_card))

    # --- display ------------------------------------------------------------------------------

    def render(self) -> Group:
        """Devices, refusals and as much of the story as the terminal has room for."""
        table = Table(title="Firstparty demo", expand=True, padding=(0, 1))
        table.add_column("device", no_wrap=True)
        table.add_column("latest verified", overflow="fold", ratio=3)
        for column in ("per s", "vendor", "you"):
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("goes to", overflow="fold", ratio=2)
        for (label, _), device_id in zip(self.devices, self.ids, strict=True):
            is_owned = device_id in self.owned
            source = self.home if is_owned else self.vendor
            table.add_row(
                f"{label.split()[0]} {device_id[:6]}\n" + ("yours" if is_owned else "unclaimed"),
                self._latest(source, device_id),
                f"{self._rate(device_id):.1f}",
                str(self._count(self.vendor, device_id)),
                str(self._count(self.home, device_id)),
                self.routes.get(device_id, ""),
            )
        refused: dict[str, dict[str, int]] = {}
        for who, _, reason, _ in self.rejections:
            refused.setdefault(who, {}).setdefault(reason, 0)
            refused[who][reason] += 1
        summary = "; ".join(
            f"{who}: " + ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items()))
            for who, reasons in sorted(refused.items())
        )
        room = max(3, self.console.size.height - 4 * len(self.devices) - 9)
        with self._lock:
            story = "\n".join(self.story[-room:])
        return Group(
            table,
            f"refused messages: {summary or 'none yet'}",
            Panel(story, title="story", subtitle="Ctrl-C ends the demo"),
        )

    def stop(self) -> None:
        while self._cleanups:
            self._cleanups.pop()()

    def summary(self) -> str:
        samples = self.data_dir / "samples"
        config = self.home_config_path
        return "\n".join(
            [
                "",
                "Where to look next:",
                f"  data folder (agents' databases and log, brokers, device flash): {self.data_dir}",
                f"  your agent's API while it runs: {self.api_url}, its OpenAPI page {self.api_url}/docs",
                "  the console (web pages) of your agent run again: the address and a sign-in link that"
                f" `serve` prints, or a new link: .venv/bin/firstparty console-link --config {config}",
                "  run your agent again on the demo's data, then use the CLI and the API:",
                f"    .venv/bin/firstparty serve --config {config}",
                f"    .venv/bin/firstparty devices list --config {config}",
                f"    .venv/bin/firstparty routes list --config {config}",
                f"    .venv/bin/firstparty audit verify --config {config}",
                "  verify a reading as a third party, holding nothing but the device card:",
                f"    .venv/bin/firstparty verify --card {samples / 'attic.card'} {samples / 'attic.reading'}",
                "  as the co-op: check what it received against the card and the owner's signed terms:",
                f"    .venv/bin/firstparty verify --card {samples / 'garage.card'} --grant {samples / 'garage-coop.grant'}"
                f" --owner {self.home.owner.public.hex()} {self.data_dir / 'coop' / 'garage.jsonl'}",
                "  as the co-op: check it against the agreement both of you signed (docs/agreements.md):",
                f"    .venv/bin/firstparty verify --card {samples / 'garage.card'} --agreement {samples / 'garage-coop.agreement'}"
                f" {self.data_dir / 'coop' / 'garage.jsonl'}",
                f"    .venv/bin/firstparty terms list --config {config}",
                "  flash a real board (docs/flashing.md):",
                f"    .venv/bin/firstparty flash --board esp32-devkitc --vendor HOST:1883 --config {config}",
                "  the wire format: docs/protocol.md; the API: docs/agent-api.md",
            ]
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    console = Console()
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        raise UserError("mosquitto is not installed: run `bash scripts/install`")
    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="firstparty-demo-"))).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # the agents' own log lines go to a file: the story on screen already tells each rejection
    logging.basicConfig(
        filename=data_dir / "agents.log",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,
    )
    demo = Demo(data_dir, args.plain, console)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends it as Ctrl-C does, cleaning up
    try:
        demo.start()
        if args.plain:
            demo.play(args.duration)
        else:
            with Live(demo.render(), console=console, refresh_per_second=4) as live:
                demo.live = live
                demo.play(args.duration)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how the demo ends when no --duration was given
    finally:
        demo.live = None
        demo.stop()
    console.print(demo.summary(), highlight=False, markup=False, soft_wrap=True)
    return 0
