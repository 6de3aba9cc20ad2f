"""Updates over the air (fp.ota) with the real firmware under the unix port and a real mosquitto: a
release sent in chunks by host_agent.updates.sender.Sender boots on probation and is confirmed by its first
delivered reading; every bad release is refused with its reason and the running release stays."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from fp import cbor, ota, release, slots, topics
from host_agent.board.build import compile_firmware
from host_agent.updates.sender import Release, Sender
from tests.firmware.conftest import Collector, counter_board, wait_for

VENDOR = SigningKey(bytes(range(1, 33)))
OWNER = SigningKey(bytes(range(2, 34)))
STRANGER = SigningKey(bytes(range(3, 35)))
RUNNING_COUNTER = 5


def _sign_with(key: SigningKey):
    return lambda data: key.sign(data).signature


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    return compile_firmware("x64", tmp_path_factory.mktemp("build") / "fw").path


def files_of(build: Path) -> dict[str, bytes]:
    return {p.relative_to(build).as_posix(): p.read_bytes() for p in sorted(build.rglob("*")) if p.is_file()}


def make_release(
    files: dict[str, bytes],
    signer: SigningKey = VENDOR,
    arch: str = "x64",
    counter: int = RUNNING_COUNTER + 1,
    version: tuple[int, int, int] = (0, 2, 0),
    approver: SigningKey | None = None,
) -> Release:
    listed = [(path, len(data), hashlib.sha256(data).digest()) for path, data in files.items()]
    manifest = release.encode_release(
        _sign_with(signer), bytes(signer.verify_key), version, arch, counter, (0, 0, 0), listed
    )
    approval = None
    if approver is not None:
        approval = release.encode_approval(_sign_with(approver), bytes(approver.verify_key), manifest)
    return Release(manifest, approval, tuple(files.values()), version)


def factory_flash(flash: Path) -> None:
    """The release the board was flashed with: its manifest in the flash root (version 0.1.0)."""
    flash.mkdir(parents=True, exist_ok=True)
    listed = [("main.py", 1, hashlib.sha256(b"x").digest())]
    (flash / slots.MANIFEST_FILE).write_bytes(
        release.encode_release(
            _sign_with(VENDOR), bytes(VENDOR.verify_key), (0, 1, 0), "x64", RUNNING_COUNTER, (0, 0, 0), listed
        )
    )


def updates(collector: Collector, device_id: str) -> list[dict | None]:
    with collector.lock:
        return [s.body.get("update") for s in collector.statuses if s.device_id == device_id]


def push(
    collector: Collector,
    device_id: str,
    sender: Sender,
    timeout_s: float = 120,
    alter: Callable[[bytes], bytes] = lambda message: message,
    stop: Callable[[bytes], bool] = lambda message: False,
) -> str | None:
    """Drive a transfer as the agent does: send, wait for the device's next signed status, repeat.
    `alter` changes a message on its way (an attacker); `stop` ends the sender before a message."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = len(updates(collector, device_id))
        latest = updates(collector, device_id)[-1] if seen else None
        message = sender.next_message(latest)
        if message is None:
            return sender.outcome
        if stop(message):
            return None
        collector.client.publish(topics.topic(device_id, "update"), alter(message), qos=1)
        try:
            wait_for(lambda seen=seen: len(updates(collector, device_id)) > seen, 5, "the device's status")
        except AssertionError:
            pass  # no answer (a reboot): send what the latest status asks for again
    raise AssertionError(f"the transfer did not finish: {updates(collector, device_id)[-3:]}")


def start_device(sim_devices, mosquitto, flash: Path, build: Path, owner: bool = True):
    provision = {"release_keys": [bytes(VENDOR.verify_key).hex()]}
    device = sim_devices(
        flash,
        (mosquitto.host, mosquitto.port),
        counter_board(0.5),
        owner_key=bytes(OWNER.verify_key) if owner else None,
        code=build,
        provision=provision,
        http_port=0,
    )
    device.start()
    return device


def start_factory_device(
    sim_devices, mosquitto, collector: Collector, tmp_path: Path, build: Path, owner: bool = True
):
    """Start a device on a factory flash and wait for its first update status at the collector."""
    flash = tmp_path / "flash"
    factory_flash(flash)
    device = start_device(sim_devices, mosquitto, flash, build, owner=owner)
    device_id = device.device_id()
    wait_for(lambda: updates(collector, device_id), 20, "the first status")
    return device, device_id, flash


def slot_state(flash: Path) -> dict:
    path = flash / slots.STATE_FILE
    return json.loads(path.read_text()) if path.exists() else slots.default_state()


def test_an_owner_approved_vendor_release_boots_on_probation_and_is_confirmed_by_its_first_delivered_reading(
    mosquitto, collector_factory, sim_devices, tmp_path, build
):
    collector = collector_factory(mosquitto)
    device, device_id, flash = start_factory_device(sim_devices, mosquitto, collector, tmp_path, build)
    new = make_release(files_of(build), approver=OWNER)
    sender = Sender(new)
    assert push(collector, device_id, sender) == "installed-on-probation"
    assert device.wait_exit() == 0  # the reboot into the new release
    assert slot_state(flash) == {"active": "", "trial": "slot_a", "tries": 0}
    assert (flash / "slot_a" / "fp" / "app.mpy").read_bytes() == files_of(build)["fp/app.mpy"]
    before = len(collector.values("n"))
    device.start()
    wait_for(lambda: len(collector.values("n")) > before, 20, "a reading from the new release")
    assert "fp: boot release in slot_a (probation)" in device.log
    wait_for(lambda: slot_state(flash)["active"] == "slot_a", 10, "the confirmation")
    wait_for(lambda: (updates(collector, device_id)[-1] or {}).get("state") == "confirmed", 10, "confirmed")
    assert updates(collector, device_id)[-1]["release"] == new.tag
    assert any("confirmed by its first delivered reading" in line for line in device.log)


def test_a_release_on_probation_is_not_confirmed_without_a_delivered_reading(
    mosquitto, collector_factory, sim_devices, tmp_path, build
):
    """A boot that got stable (safe mode's window) but delivered no reading keeps the trial on probation."""
    collector = collector_factory(mosquitto)
    device, device_id, flash = start_factory_device(sim_devices, mosquitto, collector, tmp_path, build)
    assert push(collector, device_id, Sender(make_release(files_of(build), approver=OWNER))) == (
        "installed-on-probation"
    )
    assert device.wait_exit() == 0
    board = counter_board(0.5)
    board["sensors"] = []  # no reading at all: nothing can confirm the release
    (flash / "board.json").write_text(json.dumps(board))
    device.start()
    wait_for(lambda: any("boot release in slot_a (probation)" in line for line in device.log), 20, "boot")
    wait_for(lambda: any(line.endswith("is stable") for line in device.log), 20, "a stable boot")
    time.sleep(1)
    assert slot_state(flash)["trial"] == "slot_a" and slot_state(flash)["active"] == ""


def test_bad_releases_are_refused_with_their_reason_and_the_running_release_stays(
    mosquitto, collector_factory, sim_devices, tmp_path, build
):
    collector = collector_factory(mosquitto)
    device, device_id, flash = start_factory_device(sim_devices, mosquitto, collector, tmp_path, build)
    small = {"main.py": b"print('new')\n", "fp/extra.py": bytes(range(256)) * 20}

    def tamper(message: bytes) -> bytes:
        kind, fields = ota.parse_message(message)
        if kind == ota.CHUNK and fields[0] == 1 and fields[1] == 0:
            data = bytearray(fields[2])
            data[7] ^= 1  # with its chunk hash made again: only the signed file hash can tell
            return ota.encode_chunk(fields[0], fields[1], bytes(data))
        return message

    def cut_before_last_chunk(message: bytes) -> bytes:
        kind, fields = ota.parse_message(message)
        if kind == ota.CHUNK and fields[0] == 1 and fields[1] + len(fields[2]) == len(small["fp/extra.py"]):
            return ota.encode_commit()  # the transfer ends one chunk short
        return message

    cases = [
        ("unknown-key", make_release(small, signer=STRANGER), lambda m: m),
        ("not-approved", make_release(small), lambda m: m),
        ("bad-signature", make_release(small, approver=STRANGER), lambda m: m),  # approval by another key
        ("wrong-arch", make_release(small, arch="xtensawin", approver=OWNER), lambda m: m),
        ("rollback", make_release(small, counter=RUNNING_COUNTER - 1, approver=OWNER), lambda m: m),
        ("tampered", make_release(small, approver=OWNER), tamper),
        ("truncated", make_release(small, version=(0, 3, 0), approver=OWNER), cut_before_last_chunk),
    ]
    for reason, bad, alter in cases:
        assert push(collector, device_id, Sender(bad, chunk_bytes=1024), alter=alter) == f"refused:{reason}"
        assert updates(collector, device_id)[-1] == {"state": "refused", "reason": reason, "release": bad.tag}
        assert slot_state(flash) == slots.default_state(), reason
        assert device.process and device.process.poll() is None, reason  # still running, no reboot
    before = len(collector.values("n"))
    wait_for(lambda: len(collector.values("n")) > before, 10, "readings from the running release")
    # junk on the update topic changes nothing, and the device keeps running
    for junk in (b"", b"\xff", cbor.encode([9]), cbor.encode([2, 0, 0, b"x", b"y"]), cbor.encode([3])):
        collector.client.publish(topics.topic(device_id, "update"), junk, qos=1)
    time.sleep(1)
    assert updates(collector, device_id)[-1]["reason"] == "truncated"
    assert device.process.poll() is None and slot_state(flash) == slots.default_state()


def test_an_owner_signed_release_installs_alone_and_may_go_back_to_an_older_counter(
    mosquitto, collector_factory, sim_devices, tmp_path, build
):
    collector = collector_factory(mosquitto)
    device, device_id, flash = start_factory_device(sim_devices, mosquitto, collector, tmp_path, build)
    own = make_release(files_of(build), signer=OWNER, counter=RUNNING_COUNTER - 2, version=(0, 0, 9))
    assert push(collector, device_id, Sender(own)) == "installed-on-probation"
    assert device.wait_exit() == 0
    assert slot_state(flash)["trial"] == "slot_a"


def test_an_unclaimed_device_follows_its_vendors_release_without_approval(
    mosquitto, collector_factory, sim_devices, tmp_path, build
):
    collector = collector_factory(mosquitto)
    device, device_id, flash = start_factory_device(
        sim_devices, mosquitto, collector, tmp_path, build, owner=False
    )
    assert push(collector, device_id, Sender(make_release(files_of(build)))) == "installed-on-probation"
    assert device.wait_exit() == 0


def test_a_transfer_cut_by_a_reboot_resumes_where_the_flash_left_it(
    mosquitto, collector_factory, sim_devices, tmp_path, build
):
    collector = collector_factory(mosquitto)
    device, device_id, flash = start_factory_device(sim_devices, mosquitto, collector, tmp_path, build)
    new = make_release(files_of(build), approver=OWNER)
    sender = Sender(new)
    half = new.total // 2

    def past_half(message: bytes) -> bool:
        kind, fields = ota.parse_message(message)
        return kind == ota.CHUNK and sender.sent_bytes > half

    assert push(collector, device_id, sender, stop=past_half) is None
    device.power_cut()  # mid-transfer: the slot holds part of the release
    assert slot_state(flash) == slots.default_state()
    device.start()
    wait_for(lambda: any(line.startswith("fp: device ") for line in device.log), 20, "the reboot")
    resumed = Sender(new)
    assert push(collector, device_id, resumed) == "installed-on-probation"
    assert 0 < resumed.sent_bytes < new.total  # only what the flash did not hold yet went again
    assert any(line.startswith("fp: update " + new.tag) and " at 0" not in line for line in device.log)
    assert device.wait_exit() == 0
    device.start()
    wait_for(lambda: slot_state(flash)["active"] == "slot_a", 30, "the resumed release confirmed")
