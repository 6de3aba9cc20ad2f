"""Every client of the embedded broker authenticated, its client id bound to its identity.

On the owner's agent and in the vendor role: no anonymous client, no session taken over (the
agent's included), no topic outside a client's own, no password but the one enrolled, and none
after its device is rejected. Each attack runs while a device streams readings: no reading the
broker acknowledged is lost or stored twice.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from host_agent.api import tokens
from host_agent.bus.broker import AGENT_USER
from tests.agent.conftest import (
    CountingPublisher,
    FakeDevice,
    Publisher,
    add_own_webhook,
    api,
    start_vendor_and_home,
    wait_for,
)


def connect_outcome(port: int, client_id: str = "", username=None, password=None, clean=None) -> str:
    """Connect once; return "accepted" or the broker's refusal, and disconnect."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    if username is not None:
        client.username_pw_set(username, password)
    answers: list[str] = []
    client.on_connect = lambda c, u, f, reason, p: answers.append(
        "refused: " + str(reason) if reason.is_failure else "accepted"
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_for(lambda: answers, 5, "the broker's answer")
    finally:
        client.disconnect()
        client.loop_stop()
    return answers[0]


class Stream:
    """A device publishing readings on a thread until stopped; counts what the broker acknowledged."""

    def __init__(self, port: int, device: FakeDevice, owner_id: str | None = None):
        self.publisher = CountingPublisher(port, device)
        self.disconnects = 0
        self.publisher.client.on_disconnect = lambda *a: self._lost()
        self.device = device
        self.sent: list[bytes] = []
        self.stopping = threading.Event()
        self.publisher.client.publish(
            device.topic("card"), device.card(owner_id), qos=1, retain=True
        ).wait_for_publish(5)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _lost(self) -> None:
        self.disconnects += 1

    def _run(self) -> None:
        while not self.stopping.is_set():
            data = self.device.reading()
            self.sent.append(data)
            self.publisher.send(data, 5.0)
            time.sleep(0.005)

    def stop(self) -> set[bytes]:
        self.stopping.set()
        self.thread.join(10)
        self.publisher.client.on_disconnect = None  # its own disconnect is not a takeover
        self.publisher.close()
        return set(self.publisher.acknowledged)


def stored_readings(agent) -> list[bytes]:
    return [bytes(r[0]) for r in agent.store.query("SELECT raw FROM messages WHERE kind='reading'")]


def assert_nothing_lost(agent, acknowledged: set[bytes], sent: list[bytes]) -> None:
    wait_for(lambda: acknowledged <= set(stored_readings(agent)), 20, "every acknowledged reading stored")
    stored = stored_readings(agent)
    assert len(stored) == len(set(stored)), "a reading stored twice"
    assert set(stored) <= set(sent)


def test_no_client_takes_the_agents_or_a_devices_session_and_nothing_is_lost(start_agent, webhook):
    agent = start_agent(broker={"embedded": True, "port": 0}, auto_accept=True)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    add_own_webhook(admin, webhook.url)
    port = agent.broker.port
    honest, other = FakeDevice(os.urandom(32)), FakeDevice(os.urandom(32))
    for device in (honest, other):
        agent.broker.add_device(device.device_id, device.password(port))
    agent_session = agent.bus.client.connects
    stream = Stream(port, honest)
    try:
        time.sleep(0.5)
        agent_password = agent.broker.agent_credentials()[1]
        # anonymous, with the agent's client id and a persistent session: refused
        assert connect_outcome(port, AGENT_USER, clean=False).startswith("refused")
        assert connect_outcome(port, "agent-test", clean=False).startswith("refused")
        # the agent's own name and password do not open the devices' listener either
        assert connect_outcome(port, AGENT_USER, AGENT_USER, agent_password, clean=False).startswith(
            "refused"
        )
        # an enrolled device naming the agent's client id, or another device's, gets its own session
        for stolen in (AGENT_USER, "agent-test", honest.device_id, f"fp-{honest.device_id}-home"):
            assert connect_outcome(port, stolen, *other.credentials(port), clean=False) == "accepted"
        time.sleep(1.0)
    finally:
        acknowledged = stream.stop()
    assert agent.bus.client.connects == agent_session, "the agent's session was taken over"
    assert stream.disconnects == 0, "the honest device's session was taken over"
    assert len(acknowledged) > 50
    assert_nothing_lost(agent, acknowledged, stream.sent)
    wait_for(lambda: {b for _, b in webhook.bodies} >= acknowledged, 20, "every reading forwarded")
    forwarded = [b for _, b in webhook.bodies]
    assert len(forwarded) - len(set(forwarded)) <= len(acknowledged) // 100  # duplicates within 1 %


def test_a_device_cannot_publish_or_read_outside_its_own_topics(start_agent):
    agent = start_agent(broker={"embedded": True, "port": 0}, auto_accept=True)
    port = agent.broker.port
    mallory, victim = FakeDevice(os.urandom(32)), FakeDevice(os.urandom(32))
    for device in (mallory, victim):
        agent.broker.add_device(device.device_id, device.password(port))
    attacker = Publisher("127.0.0.1", port, "", *mallory.credentials(port))
    honest = Publisher("127.0.0.1", port, "", *victim.credentials(port))
    try:
        for topic_filter in ("fp/v1/#", f"fp/v1/{victim.device_id}/command", "$SYS/#", "#"):
            attacker.subscribe(topic_filter)
        honest.subscribe(victim.topic("command"))
        honest.publish(victim.topic("card"), victim.card(), retain=True)
        honest.publish(victim.topic("reading"), victim.reading())
        wait_for(lambda: agent.store.count_readings() == 1, 10, "the victim's own reading")
        attacker.publish(victim.topic("card"), victim.card(), retain=True)  # not its id: dropped
        attacker.publish(victim.topic("reading"), victim.reading())
        attacker.publish("fp/v1/" + victim.device_id + "/command", b"\xa0")
        attacker.publish(mallory.topic("command"), b"\xa0")  # devices read commands, never write them
        agent.loop.call_soon_threadsafe(agent._publish_command, victim.topic("command"), b"\xa1\x01\x02")
        time.sleep(1.5)
        assert agent.store.count_readings() == 1
        assert attacker.received == [], "it read another device's messages"
        assert honest.received == [(victim.topic("command"), b"\xa1\x01\x02")]  # its own: allowed
    finally:
        attacker.close()
        honest.close()


def test_wrong_missing_foreign_or_revoked_passwords_are_refused(start_agent):
    agent = start_agent(broker={"embedded": True, "port": 0})
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    port = agent.broker.port
    device = FakeDevice(os.urandom(32))
    card = device.card(agent.owner.owner_id)
    response = admin.post("/devices/enrol", json={"card_hex": card.hex(), "password": device.password(port)})
    assert response.status_code == 201, response.text
    assert response.json()["device_id"] == device.device_id
    time.sleep(0.3)
    assert connect_outcome(port, "", *device.credentials(port)) == "accepted"
    assert connect_outcome(port, "", device.device_id, "0" * 32).startswith("refused")
    assert connect_outcome(port, "", device.device_id).startswith("refused")  # no password
    assert connect_outcome(port).startswith("refused")  # anonymous
    # its password for another broker (the vendor's) opens nothing here
    assert connect_outcome(port, "", device.device_id, device.password(1883, "vendor.example")).startswith(
        "refused"
    )
    # the password file holds a hash, never the password
    assert (
        device.password(port) not in (Path(agent.config.data_dir) / "broker" / "devices.passwd").read_text()
    )
    # enrolment takes a card and a password of the device's form, or a device's address: nothing else
    for body in (
        {"card_hex": card.hex()},
        {"card_hex": card.hex(), "password": "short"},
        {},
        {"password": "0" * 32},
        {"device_url": "http://a:y"},  # the schema-driven pass found this one: a port that is no number
        {"device_url": "http://a:99999"},
        {"device_url": "file:///etc/passwd"},
    ):
        assert admin.post("/devices/enrol", json=body).status_code == 422, body
    assert admin.post("/devices/enrol", json={"card_hex": "00", "password": "0" * 32}).status_code == 400
    reader = api(agent, tokens.issue(agent.store, "reader", "read"))
    assert (
        reader.post("/devices/enrol", json={"card_hex": card.hex(), "password": "1" * 32}).status_code == 403
    )
    # rejected: the broker refuses its password from then on
    assert admin.post("/devices", json={"card_hex": card.hex()}).status_code == 201
    assert admin.post(f"/pending/{device.device_id}/reject").status_code == 200
    time.sleep(0.3)
    assert connect_outcome(port, "", *device.credentials(port)).startswith("refused")


def test_vendor_roles_broker_binds_sessions_and_relays_read_only_their_owners_readings(start_agent, webhook):
    vendor = start_agent(role="vendor", broker={"embedded": True, "port": 0, "client_id": "vendor-service"})
    admin = api(vendor, tokens.issue(vendor.store, "admin", "admin"))
    add_own_webhook(admin, webhook.url)  # the vendor's own: duplicates forwarded are counted there
    port = vendor.broker.port
    alices, bobs, intruder = (FakeDevice(os.urandom(32)) for _ in range(3))
    for each in (alices, bobs, intruder):
        vendor.broker.add_device(each.device_id, each.password(port))
    alice_id = FakeDevice(os.urandom(32)).device_id  # an owner id has a device id's form
    relay = admin.post("/relays", json={"name": "alice-home", "owner_id": alice_id}).json()
    assert relay["username"] == "relay-alice-home"
    assert admin.post("/relays", json={"name": "Alice!", "owner_id": alice_id}).status_code == 422
    assert admin.post("/relays", json={"name": "x", "owner_id": "nobody"}).status_code == 422
    session = vendor.bus.client.connects
    streams = [Stream(port, alices, alice_id), Stream(port, bobs)]
    watcher = None
    try:
        wait_for(lambda: vendor.store.device(alices.device_id), 10, "alice's device known to the vendor")
        time.sleep(1.5)  # the relay's ACL follows the cards
        watcher = Publisher("127.0.0.1", port, "", relay["username"], relay["password"])
        watcher.subscribe("fp/v1/#")
        for stolen in ("vendor-service", AGENT_USER, alices.device_id, relay["username"]):
            assert connect_outcome(port, stolen, clean=False).startswith("refused")
            assert connect_outcome(port, stolen, *intruder.credentials(port), clean=False) == "accepted"
        watcher.publish(bobs.topic("reading"), bobs.reading(seq=10_000))  # a relay writes no readings
        time.sleep(1.0)
    finally:
        acknowledged = [stream.stop() for stream in streams]
        if watcher:
            watcher.close()
    assert vendor.bus.client.connects == session
    assert [stream.disconnects for stream in streams] == [0, 0]
    for acked in acknowledged:
        wait_for(
            lambda acked=acked: acked <= set(stored_readings(vendor)), 20, "every acknowledged reading stored"
        )
    stored = stored_readings(vendor)
    assert len(stored) == len(set(stored)) and set(stored) <= set(streams[0].sent + streams[1].sent)
    every_acknowledged = acknowledged[0] | acknowledged[1]
    wait_for(lambda: {b for _, b in webhook.bodies} >= every_acknowledged, 20, "every reading forwarded")
    forwarded = [b for _, b in webhook.bodies]
    assert len(forwarded) - len(set(forwarded)) <= len(every_acknowledged) // 100  # duplicates within 1 %
    seen = {(topic.split("/")[2], topic.rsplit("/", 1)[1]) for topic, _ in watcher.received}
    assert (alices.device_id, "reading") in seen and (bobs.device_id, "card") in seen
    assert (bobs.device_id, "reading") not in seen  # another owner's readings
    broker = vendor.broker
    broker_pid, restarts = broker.mosquitto.process.pid, broker.restarts
    assert admin.delete("/relays/alice-home").status_code == 200
    time.sleep(0.3)

    def revoked_outcome():
        try:
            return connect_outcome(port, "", relay["username"], relay["password"])
        except ConnectionRefusedError:
            # a reload (SIGHUP) neither restarts mosquitto nor closes its listener: a refused TCP
            # connection means the process is gone (mosquitto 2.0.11 itself has crashed on a
            # reload under load, docs/operations.md) and the supervisor is starting the next
            process = broker.mosquitto.process
            if process is not None and process.pid == broker_pid:
                try:  # it has ended, or is ending (its sockets close before it can be reaped)
                    process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    raise AssertionError("a running broker refused a TCP connection") from None
            return None

    assert wait_for(revoked_outcome, 10, "the broker's answer").startswith("refused")
    if broker.mosquitto.process.pid != broker_pid:  # the crash above: restarted once, by the supervisor
        assert broker.restarts == restarts + 1 and broker.last_exit in ("signal 11", "signal 6"), (
            broker.restarts,
            broker.last_exit,
        )
        print(f"mosquitto crashed on the reload ({broker.last_exit}) and was restarted")


def test_owner_enrols_a_vendor_flashed_device_over_its_lan_and_the_vendor_never_sees_the_password(
    tmp_path, start_agent
):
    """The real firmware: flashed for the vendor, claimed by the owner, rerouted to the owner's broker."""
    from host_agent.rig.simdevice import SimDevice

    vendor, home, _ = start_vendor_and_home(start_agent, tmp_path)
    vendor_host, vendor_port = vendor.devices_endpoint()
    admin = api(home, tokens.issue(home.store, "admin", "admin"))
    # what crosses the vendor's broker: the owner's commands, and what the device sends the vendor
    commands: list[bytes] = []
    send = home.commander.publish
    home.commander.publish = lambda topic, payload: (commands.append(bytes(payload)), send(topic, payload))
    device = SimDevice(tmp_path / "flash", (vendor_host, vendor_port)).start()
    try:
        device_id = device.device_id(20)
        device.enrol(vendor)  # the vendor's factory: `firstparty flash --config vendor.toml`
        wait_for(lambda: vendor.store.count_readings() >= 1, 30, "readings at the vendor")
        wait_for(lambda: home.store.device(device_id), 20, "the device's card at the owner's agent (relay)")
        url = f"http://127.0.0.1:{device.http_port}"
        refused = admin.post("/devices/enrol", json={"device_url": url})
        assert refused.status_code == 400 and "claim window is closed" in refused.json()["detail"]
        device.press_button()
        enrolled = admin.post("/devices/enrol", json={"device_url": url})
        assert enrolled.status_code == 201, enrolled.text
        claim = admin.post(f"/devices/{device_id}/commands", json={"op": "claim", "args": {}}).json()
        assert claim["outcome"] == "applied", claim
        assert admin.post(f"/pending/{device_id}/accept").status_code == 200
        route = {
            "name": "mine",
            "destination": {"type": "file", "path": "mine.jsonl"},  # inside files_dir
            "devices": [device_id],
            "mode": "instead-of",
        }
        response = admin.post("/routes", json=route)
        assert response.status_code == 201 and response.json()["device_commands"][0]["outcome"] == "applied"
        before = home.store.count_readings()
        wait_for(
            lambda: home.store.count_readings() >= before + 3, 30, "readings through the owner's own broker"
        )
        home_password = device.broker_password(*home.devices_endpoint())
        stored = b"".join(bytes(r[0]) for r in vendor.store.query("SELECT raw FROM messages"))
        carried = b"".join(commands) + stored
        assert len(commands) >= 2 and stored and home_password.encode() not in carried
        assert bytes.fromhex(home_password) not in carried
    finally:
        device.stop()


@pytest.mark.parametrize("role", ["owner", "vendor"])
def test_a_device_can_neither_read_nor_forge_another_devices_receipts(start_agent, role):
    """Each device authenticated as itself on the embedded broker: the receipts the agent signs
    for one device reach that device only, and a receipt another device publishes onto its topic
    never reaches it (the broker's ACL, not the device's signature check, stops it)."""
    from fp import ed25519, messages

    agent = start_agent(role=role, broker={"embedded": True, "port": 0}, auto_accept=True)
    assert agent.receipts is not None
    port = agent.broker.port
    mallory, victim = FakeDevice(os.urandom(32)), FakeDevice(os.urandom(32))
    for each in (mallory, victim):
        agent.broker.add_device(each.device_id, each.password(port))
    attacker = Publisher("127.0.0.1", port, "", *mallory.credentials(port))
    honest = Publisher("127.0.0.1", port, "", *victim.credentials(port))
    try:
        assert attacker.refusals == [] and honest.refusals == []
        for topic_filter in (victim.topic("receipt"), "fp/v1/+/receipt", "#"):
            attacker.subscribe(topic_filter)
        honest.subscribe(victim.topic("receipt"))
        for each, client in ((victim, honest), (mallory, attacker)):
            client.publish(each.topic("card"), each.card(), retain=True)
            for _ in range(3):
                client.publish(each.topic("reading"), each.reading())
        wait_for(lambda: agent.store.count_readings() == 6, 10, "both devices' readings stored")

        def receipts_for(client, device) -> list[bytes]:
            return [payload for topic, payload in client.received if topic == device.topic("receipt")]

        # the control: each device does get its own receipts on this broker
        wait_for(lambda: receipts_for(honest, victim), 10, "the victim's receipt")
        wait_for(lambda: receipts_for(attacker, mallory), 10, "mallory's own receipt")
        forged = messages.encode_receipt(
            mallory.sign, mallory.public, victim.device_id, 2**62, [[1, 0, 0xFFFFFFFF]]
        )
        attacker.publish(victim.topic("receipt"), forged)
        for genuine in receipts_for(attacker, mallory):  # signed by the agent, but for mallory
            attacker.publish(victim.topic("receipt"), genuine)
        time.sleep(1.5)
        assert receipts_for(attacker, victim) == [], "it read another device's receipts"
        assert all(topic == mallory.topic("receipt") for topic, _ in attacker.received)
        got = receipts_for(honest, victim)
        assert forged not in got and len(got) == len(honest.received)
        covered = set()
        for data in got:  # only the agent's genuine receipts, for the victim's own readings
            receipt = messages.parse_receipt(data)
            messages.check_receipt(
                receipt, agent.receipts.public, agent.receipts.key_id, victim.device_id, 0, ed25519.verify
            )
            covered |= {(boot, seq) for boot, first, last in receipt.ranges for seq in range(first, last + 1)}
        assert covered == {(1, 0), (1, 1), (1, 2)}
    finally:
        attacker.close()
        honest.close()
