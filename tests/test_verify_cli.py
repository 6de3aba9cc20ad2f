"""`firstparty verify` as a recipient uses it: one message, a file of forwards, a live topic, and the
owner's signed terms of sharing; it runs nothing else of ours."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

from fp import messages, topics
from fp.ids import id_from_public_key
from host_agent import wire
from host_agent.bus.mosquitto import Mosquitto
from host_agent.routes import grants
from host_agent.routes import rules as routes
from tests.agent.conftest import FakeDevice, Publisher
from tests.helpers import venv_tool


def verify(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("firstparty"), "verify", *args], capture_output=True, text=True, timeout=timeout_s
    )


def forwards_file(path: Path, device: FakeDevice, readings: list[bytes]) -> Path:
    """JSON lines as the agent's file destination writes them."""
    lines = [
        json.dumps(
            {
                "idempotency_key": f"{device.device_id}:{device.boot}:{seq}",
                "device_id": device.device_id,
                "message": base64.b64encode(raw).decode(),
            }
        )
        for seq, raw in enumerate(readings)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class Owner:
    def __init__(self):
        seed = os.urandom(32)
        self.sign = wire.nacl_signer(seed)
        self.public = wire.nacl_public_key(seed)

    def grant(self, path: Path, device_id: str, metrics: list[str], expires_s: int) -> Path:
        spec = routes.validate(
            {
                "destination": {"type": "file", "path": "/tmp/x"},
                "devices": [device_id],
                "metrics": metrics,
                "terms": {"recipient": "co-op", "purpose": "study", "expires_s": expires_s},
            }
        )
        path.write_bytes(grants.encode_grant(self.sign, self.public, "coop", spec, int(time.time())))
        return path


def test_a_file_of_forwards_verifies_line_by_line_and_names_the_bad_line(tmp_path):
    device = FakeDevice(os.urandom(32))
    card = tmp_path / "device.card"
    card.write_bytes(device.card())
    good = [device.reading(), device.reading()]
    tampered = bytearray(device.reading())
    tampered[-5] ^= 1
    path = forwards_file(tmp_path / "coop.jsonl", device, [*good, bytes(tampered)])
    with path.open("a") as file:
        file.write("{not json\n")

    result = verify("--card", str(card), str(path))

    assert result.returncode == 1
    assert f"{path}:1: verified reading from {device.device_id} boot 1 seq 0" in result.stdout
    assert f"{path}:3: REFUSED bad-signature" in result.stdout
    assert f"{path}:4: REFUSED malformed" in result.stdout
    assert "2 verified, 2 refused" in result.stdout


def test_readings_outside_the_owners_grant_are_refused(tmp_path):
    owner = Owner()
    device = FakeDevice(os.urandom(32))
    card = tmp_path / "device.card"
    card.write_bytes(device.card(owner_id=id_from_public_key(owner.public)))
    grant = owner.grant(tmp_path / "coop.grant", device.device_id, ["temp"], int(time.time()) + 3600)
    path = forwards_file(
        tmp_path / "coop.jsonl",
        device,
        [device.reading([("temp", "Cel", 20.5)]), device.reading([("hum", "%RH", 40.0)])],
    )

    result = verify("--card", str(card), "--grant", str(grant), "--owner", owner.public.hex(), str(path))

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"shares {device.device_id} metrics temp with 'co-op' for 'study'" in result.stdout
    assert f"{path}:1: verified reading" in result.stdout
    assert f"{path}:2: REFUSED not-granted" in result.stdout


def test_a_grant_signed_by_someone_else_is_refused_in_one_line(tmp_path):
    owner, stranger = Owner(), Owner()
    device = FakeDevice(os.urandom(32))
    card = tmp_path / "device.card"
    card.write_bytes(device.card())
    grant = stranger.grant(tmp_path / "coop.grant", device.device_id, ["*"], int(time.time()) + 3600)
    reading = tmp_path / "one.reading"
    reading.write_bytes(device.reading())

    result = verify("--card", str(card), "--grant", str(grant), "--owner", owner.public.hex(), str(reading))

    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "is not a grant of this owner" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_live_topic_learns_retained_cards_and_refuses_forgeries(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    device, forger = FakeDevice(os.urandom(32)), FakeDevice(os.urandom(32))
    publisher = Publisher(broker.host, broker.port)
    try:
        publisher.publish(device.topic("card"), device.card(), retain=True)
        process = subprocess.Popen(
            [venv_tool("firstparty"), "verify", "--live",
             f"{broker.host}:{broker.port}", "--count", "3", "--duration", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # subscribed once the retained card is printed (a fixed pause lost the race under load); the
        # process ends by itself after --duration, so this read cannot hang
        first = process.stdout.readline() if process.stdout else ""
        publisher.publish(device.topic("reading"), device.reading())
        forged = messages.encode_reading(forger.sign, device.device_id, 1, 99, [("temp", "Cel", 99.0)], None)
        publisher.publish(device.topic("reading"), forged)
        publisher.publish(topics.topic(forger.device_id, "reading"), forger.reading())
        out, err = process.communicate(timeout=40)
        out = first + out
    finally:
        publisher.close()
        broker.stop()

    assert process.returncode == 1, out + err
    assert f"card of {device.device_id}" in out
    assert f"verified reading from {device.device_id} boot 1 seq 0" in out
    assert "REFUSED bad-signature" in out
    assert "REFUSED unknown-device" in out
    assert "1 verified, 2 refused" in out
