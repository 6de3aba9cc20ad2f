"""Fixtures of the agent tests: a real agent on a real broker and SQLite file, devices that sign
with the firmware's own codec (byte-identical to what boards send), and loopback destinations."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from fp import messages, topics
from fp.ids import broker_password, id_from_public_key
from host_agent import config as agent_config
from host_agent import wire
from host_agent.api import tokens
from host_agent.bus.mosquitto import Mosquitto
from host_agent.owner import Owner
from host_agent.rig.simdevice import SimDevice, micropython_command
from host_agent.service import start_in_thread
from tests.helpers import REPO, wait_for


class FakeDevice:
    """Signs like a device (fp.messages with PyNaCl) and publishes over MQTT."""

    def __init__(self, seed: bytes, boot: int = 1):
        self.seed = seed
        self.sign = wire.nacl_signer(seed)
        self.public = wire.nacl_public_key(seed)
        self.device_id = id_from_public_key(self.public)
        self.boot = boot
        self.seq = 0

    def card(self, owner_id: str | None = None) -> bytes:
        return messages.encode_card(self.sign, self.public, "sim", "0.1.0", 1764000000, owner_id)

    def reading(self, values=(("temp", "Cel", 21.5),), seq: int | None = None) -> bytes:
        if seq is None:
            seq = self.seq
            self.seq += 1
        return messages.encode_reading(self.sign, self.device_id, self.boot, seq, list(values), 1764000000)

    def topic(self, kind: str) -> str:
        return topics.topic(self.device_id, kind)

    def password(self, port: int, host: str = "127.0.0.1") -> str:
        """Its password for the broker at host:port, derived as the firmware derives it."""
        return broker_password(self.seed, host, port)

    def credentials(self, port: int, host: str = "127.0.0.1") -> tuple[str, str]:
        return self.device_id, self.password(port, host)


class Publisher:
    """A plain MQTT client on the test broker."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "",
        username: str | None = None,
        password: str | None = None,
        clean_session: bool | None = None,
    ):
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
        )
        if username:
            self.client.username_pw_set(username, password)
        self.received: list[tuple[str, bytes]] = []
        self.refusals: list[str] = []
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_connect = lambda c, u, f, reason, p: (
            reason.is_failure and self.refusals.append(str(reason))
        )
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def subscribe(self, topic_filter: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic_filter, 1)
        done.wait(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Webhook:
    """An HTTP server on loopback that records every POST (status code settable)."""

    def __init__(self):
        self.bodies: list[tuple[dict, bytes]] = []
        self.posts = 0  # every POST, whatever the answer
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-body (a killed agent): nothing was posted
                    return
                outer.posts += 1
                if outer.status < 300:
                    outer.bodies.append((dict(self.headers), body))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/in"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def agent_settings(tmp_path: Path, test_broker, **extra) -> dict:
    settings = {
        "data_dir": str(tmp_path / "agent"),
        "broker": {
            "embedded": False,
            "host": test_broker.host,
            "port": test_broker.port,
            "client_id": "agent-test",
        },
        "api": {"port": 0},
        "outbox_backoff_max_s": 1.0,
        "command_timeout_s": 5.0,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key].update(value)
        else:
            settings[key] = value
    return settings


# Modules whose agents run on both store backends say so with `pytestmark = BOTH_STORES` (or mark
# single tests with it): each of their tests that starts an agent runs twice, and the PostgreSQL
# run carries the `postgresql` marker (`pytest -m postgresql` counts or runs them).
#
# Which, and why the others not (the suite must stay under 15 minutes on CI's 2 cores): on both
# run the modules whose outcome the store decides: the API and its property pass (PostgreSQL
# refuses what SQLite takes: it found "IN ()"), access, cards, rejections, receipts, terms,
# hostile input, end to end, the console (tests/console), the outbox's retries with a destination
# down (test_durability), two agents on one $share/ group and the lease of a claimed forward
# (test_scale_out; agent processes on PostgreSQL: test_postgres.py), the schema upgrades
# (test_store_migration). SQLite only, their store use being incidental or SQLite's own:
# test_broker_auth (the broker's accounts and ACLs; the store only lists devices), test_supervision
# (the embedded broker's process), test_firmware and test_home_assistant (the firmware's and Home
# Assistant's MQTT; the store holds a route), test_terms_mqtt (the relay account's topics; the
# agreements' records are test_terms' on both), test_disk_full and test_durability's SIGKILL and
# full disk (SQLite's file and page cap; PostgreSQL's: test_postgres.py, and test_disk_full's
# docstring says why no PostgreSQL disk is filled).
BOTH_STORES = pytest.mark.both_stores


def pytest_generate_tests(metafunc):
    if "store_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_stores"):
        metafunc.parametrize(
            "store_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
        )


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL for the session (loopback, a free port, an unprivileged user), removed after."""
    from host_agent.rig.postgres import Postgres

    server = Postgres().start()
    yield server
    server.remove()


@pytest.fixture
def store_url(request) -> str | None:
    """None: the agent's SQLite file; with BOTH_STORES, also an empty PostgreSQL database's URL."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    server = request.getfixturevalue("postgres_server")
    server.reset()
    return server.url


@pytest.fixture
def start_agent(request, tmp_path, mosquitto, store_url):
    """Start agents (in threads) on the test broker and the test's store; all stopped at the end.

    On PostgreSQL, agents of one data_dir share a database (a $share/ group, or an agent started
    again) and agents of another data_dir (a vendor and an owner) each have their own."""
    started = []
    databases: dict[str, str] = {}

    def start(**extra):
        if store_url is not None:
            data_dir = str(extra.get("data_dir", tmp_path / "agent"))
            if data_dir not in databases:
                server = request.getfixturevalue("postgres_server")
                databases[data_dir] = server.create_database(len(databases)) if databases else store_url
            extra["store"] = {"url": databases[data_dir], **extra.get("store", {})}
        config = agent_config.from_dict(agent_settings(tmp_path, mosquitto, **extra))
        agent, thread = start_in_thread(config)
        wait_for(lambda: agent.bus.is_connected, 10, "agent connected to the broker")
        time.sleep(0.2)  # subscriptions in place
        started.append((agent, thread))
        return agent

    yield start
    for agent, thread in started:
        agent.request_stop()
        thread.join(10)


@pytest.fixture
def device():
    return FakeDevice(os.urandom(32))


@pytest.fixture
def publisher(mosquitto):
    client = Publisher(mosquitto.host, mosquitto.port)
    yield client
    client.close()


@pytest.fixture
def webhook():
    server = Webhook()
    yield server
    server.close()


def api(agent, token: str | None = None) -> httpx.Client:
    """An HTTP client of the agent's API with `token`, or with a new admin token of its own."""
    if token is None:
        token = tokens.issue(agent.store, "admin-" + os.urandom(3).hex(), "admin")
    return httpx.Client(
        base_url=f"http://127.0.0.1:{agent.api_port}",
        headers={"authorization": f"Bearer {token}"},
        timeout=20,
    )


def run_on(agent, coroutine):
    """Run a coroutine on the agent's event loop (it runs in a thread) and return its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, agent.loop).result(30)


try:
    micropython_command()
    HAS_MICROPYTHON = True
except FileNotFoundError:
    HAS_MICROPYTHON = False


class CountingPublisher:
    """A device's MQTT connection that remembers every reading the broker acknowledged."""

    def __init__(self, port: int, device: FakeDevice):
        self.device = device
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="counting-" + device.device_id)
        self.client.username_pw_set(*device.credentials(port))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.acknowledged: list[bytes] = []

    def send(self, data: bytes, timeout_s: float = 2.0) -> bool:
        """Publish with QoS 1; True (and counted) when the broker acknowledged it."""
        try:
            info = self.client.publish(self.device.topic("reading"), data, qos=1)
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            return False
        if info.is_published():
            self.acknowledged.append(data)
            return True
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def add_own_route(admin: httpx.Client, name: str, destination: dict, **fields) -> dict:
    """Add a route to a destination the owner states is their own (no agreement to wait for);
    `fields` are the route's others (metrics, terms, ...). Returns the API's answer."""
    response = admin.post(
        "/routes", json={"name": name, "destination": destination, "needs_agreement": False, **fields}
    )
    assert response.status_code == 201, response.text
    return response.json()


def add_own_webhook(admin: httpx.Client, url: str, name: str = "hook") -> dict:
    """Route every reading to a webhook the owner states is their own."""
    return add_own_route(admin, name, {"type": "webhook", "url": url})


def agent_toml(settings: dict) -> str:
    lines = []
    tables = {k: v for k, v in settings.items() if isinstance(v, dict)}
    for key, value in settings.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {json.dumps(value)}")
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def serve_process(config_path: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'firmware'}")
    return subprocess.Popen(
        [sys.executable, "-m", "host_agent.cli.main", "serve", "--config", str(config_path)],
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
    )


def publish_killing_one_midway(publisher: Publisher, device: FakeDevice, total: int, kill) -> list[bytes]:
    """Publish `total` readings with QoS 1 and call `kill()` (SIGKILL an agent) a third of the way in."""
    sent = [device.reading() for _ in range(total)]
    for index, data in enumerate(sent):
        publisher.client.publish(device.topic("reading"), data, qos=1)
        if index == total // 3:
            time.sleep(0.2)
            kill()
    time.sleep(0.5)
    return sent


@dataclass
class VendorSwitch:
    """The real firmware publishing to the vendor's broker (the test's mosquitto), an agent relaying
    it, a second broker (`other`) for the owner's own destination, and a subscriber on each."""

    agent: Any
    admin: httpx.Client
    other: Mosquitto
    vendor_view: Publisher
    other_view: Publisher
    device: SimDevice
    device_id: str = ""

    def accept(self, what: str = "the device pending") -> None:
        """Wait for the device to be pending (its card relayed from the vendor) and accept it."""
        wait_for(lambda: self.admin.get("/pending").json(), 20, what)
        assert self.admin.post(f"/pending/{self.device_id}/accept").status_code == 200

    def assert_only_the_owner_receives(self) -> None:
        """After a switch to instead-of: the vendor receives nothing more, the agent keeps storing."""
        time.sleep(2)  # the switch settles: readings in flight reach the vendor
        vendor_count = len(self.vendor_view.received)
        stored = self.agent.store.count_readings()
        time.sleep(4)
        assert len(self.vendor_view.received) == vendor_count, "the vendor still receives"
        assert self.agent.store.count_readings() >= stored + 2, "the owner stopped receiving"


@pytest.fixture
def vendor_switch(start_agent, mosquitto, tmp_path):
    """A VendorSwitch with the device started and both subscribers on its reading topic."""
    vendor = mosquitto
    agent = start_agent(
        broker={"embedded": True, "port": 0, "relay_brokers": [f"{vendor.host}:{vendor.port}"]}
    )
    other = Mosquitto(tmp_path / "other").start()
    rig = VendorSwitch(
        agent=agent,
        admin=api(agent, tokens.issue(agent.store, "admin", "admin")),
        other=other,
        vendor_view=Publisher(vendor.host, vendor.port),
        other_view=Publisher(other.host, other.port),
        device=SimDevice(tmp_path / "flash", (vendor.host, vendor.port), owner_key=agent.owner.public),
    )
    rig.device.start()
    try:
        rig.device_id = rig.device.device_id(20)
        rig.vendor_view.subscribe(f"fp/v1/{rig.device_id}/reading")
        rig.other_view.subscribe(f"fp/v1/{rig.device_id}/reading")
        yield rig
    finally:
        rig.device.stop()
        rig.vendor_view.close()
        rig.other_view.close()
        rig.other.stop()


def proffer_body(device: FakeDevice, **changes) -> dict:
    """A POST /agreements body: the service-only agreement for one device, with `changes`."""
    body = {
        "agreement": "service-only@1",
        "recipient": "vendor",
        "devices": [device.device_id],
        "metrics": ["*"],
        "purpose": "service",
        "retention_days": 30,
    }
    body.update(changes)
    return body


def relay_account(vendor, name: str, owner_id: str):
    """The relay account a vendor agent makes for an owner's agent on its broker."""
    return asyncio.run_coroutine_threadsafe(vendor.add_relay(name, owner_id), vendor.loop).result(10)


def start_vendor_and_home(start_agent, tmp_path, *, vendor_api: bool = False):
    """A vendor agent with its embedded broker, and a home agent relaying it with the relay account
    the vendor gave it (and, with `vendor_api`, proffering its terms over that broker)."""
    vendor = start_agent(
        role="vendor",
        data_dir=str(tmp_path / "vendor"),
        broker={"embedded": True, "port": 0, "client_id": "vendor-service"},
    )
    home_owner = Owner(tmp_path / "home" / "owner.key")
    relay = relay_account(vendor, "home", home_owner.owner_id)
    host, port = vendor.devices_endpoint()
    extra = {"terms": {"vendor_api": f"mqtt://{host}:{port}"}} if vendor_api else {}
    home = start_agent(
        data_dir=str(tmp_path / "home"),
        broker={
            "embedded": True,
            "port": 0,
            "relay_brokers": [f"{host}:{port}"],
            "relay_username": relay.username,
            "relay_password": relay.password,
        },
        **extra,
    )
    return vendor, home, f"mqtt://{host}:{port}"


def publish_card_and_readings(publisher, device: FakeDevice, count: int) -> list[bytes]:
    """Publish the device's card (retained), then `count` new readings; return the readings sent."""
    publisher.publish(device.topic("card"), device.card(), retain=True)
    sent = [device.reading() for _ in range(count)]
    for data in sent:
        publisher.publish(device.topic("reading"), data)
    return sent
