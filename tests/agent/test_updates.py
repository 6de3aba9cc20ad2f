"""Updates through the agent: `firstparty update DEVICE --release DIR` with the real firmware under the
unix port and a real mosquitto; the update state in the device's API and /metrics; the vendor role
offering its release to a claimed device's owner, whose approval goes with the transfer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from fp import release
from host_agent.api import tokens
from host_agent.api.client import write_runtime
from host_agent.board.build import compile_firmware
from host_agent.cli import main as cli
from host_agent.rig.simdevice import SimDevice
from host_agent.updates.sender import APPROVAL_FILE, MANIFEST_FILE
from tests.agent.conftest import api
from tests.firmware.conftest import counter_board
from tests.helpers import wait_for

VENDOR = SigningKey(bytes(range(7, 39)))


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    return compile_firmware("x64", tmp_path_factory.mktemp("build") / "fw").path


def release_folder(folder: Path, build: Path, signer: SigningKey = VENDOR, counter: int = 2) -> Path:
    """A release folder as `firstparty release build|sign` leaves it, signed by `signer`."""
    files = {p.relative_to(build).as_posix(): p.read_bytes() for p in sorted(build.rglob("*")) if p.is_file()}
    for path, data in files.items():
        (folder / "files" / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / "files" / path).write_bytes(data)
    listed = [(path, len(data), hashlib.sha256(data).digest()) for path, data in files.items()]
    manifest = release.encode_release(
        lambda data: signer.sign(data).signature,
        bytes(signer.verify_key),
        (0, 2, 0),
        "x64",
        counter,
        (0, 0, 0),
        listed,
    )
    (folder / MANIFEST_FILE).write_bytes(manifest)
    return folder


def start_device(tmp_path: Path, mosquitto, owner_key: bytes, build: Path) -> tuple[SimDevice, str]:
    device = SimDevice(
        tmp_path / "flash",
        (mosquitto.host, mosquitto.port),
        counter_board(0.5),
        owner_key=owner_key,
        code=build,
        http_port=0,
        provision={"release_keys": [bytes(VENDOR.verify_key).hex()]},
    ).start()
    return device, device.device_id(20)


def cli_config(tmp_path: Path, agent) -> Path:
    write_runtime(agent.config, agent.api_port, agent.store)
    path = tmp_path / "cli.toml"
    path.write_text(f'data_dir = "{agent.config.data_dir}"\n')
    return path


def test_firstparty_update_sends_an_approved_release_and_the_api_and_metrics_follow_it_to_confirmed(
    start_agent, mosquitto, tmp_path, build, capsys
):
    agent = start_agent()
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    device, device_id = start_device(tmp_path, mosquitto, agent.owner.public, build)
    try:
        wait_for(lambda: admin.get("/pending").json(), 20, "the device pending")
        assert admin.post(f"/pending/{device_id}/accept").status_code == 200
        wait_for(lambda: admin.get(f"/devices/{device_id}").json()["status"], 20, "its status")
        assert admin.get(f"/devices/{device_id}").json()["update"] == "idle"
        config = cli_config(tmp_path, agent)
        folder = release_folder(tmp_path / "rel", build)

        # without the owner's approval, the claimed device refuses the vendor's release
        assert cli.main(["update", device_id, "--release", str(folder), "--config", str(config)]) == 1
        assert "refused:not-approved" in capsys.readouterr().out
        assert admin.get(f"/devices/{device_id}/update").json()["state"] == "refused:not-approved"
        assert device.process and device.process.poll() is None

        # approved by the owner (the agent's owner key): installed, rebooted, confirmed
        assert (
            cli.main(["update", device_id, "--release", str(folder), "--approve", "--config", str(config)])
            == 0
        )
        assert "installed-on-probation" in capsys.readouterr().out
        assert device.wait_exit() == 0
        device.start()
        wait_for(
            lambda: admin.get(f"/devices/{device_id}/update").json()["state"] == "confirmed", 30, "confirmed"
        )
        wait_for(lambda: admin.get(f"/devices/{device_id}").json()["update"] == "confirmed", 10, "stored")
        metrics = admin.get("/metrics").text
        assert f'firstparty_device_update{{device_id="{device_id}",state="confirmed"}} 1.0' in metrics
        offered = admin.get("/releases").json()
        assert [r["version"] for r in offered] == ["0.2.0"]
        assert offered[0]["approved_by"] == [agent.owner.owner_id]
    finally:
        device.stop()


def test_the_vendor_offers_its_release_and_sends_it_with_the_owners_approval(
    start_agent, mosquitto, tmp_path, build
):
    owner = SigningKey(bytes(range(9, 41)))
    owner_id = release.id_from_public_key(bytes(owner.verify_key))
    vendor = start_agent(role="vendor")
    admin = api(vendor, tokens.issue(vendor.store, "admin", "admin"))
    account = api(vendor, tokens.issue(vendor.store, "owner", "admin", account=owner_id))
    stranger = api(vendor, tokens.issue(vendor.store, "other", "admin", account="a" * 24))
    device, device_id = start_device(tmp_path, mosquitto, bytes(owner.verify_key), build)
    try:
        wait_for(lambda: admin.get(f"/devices/{device_id}").status_code == 200, 20, "the device known")
        from host_agent.updates.desk import import_release

        tag = import_release(vendor.config.data_dir, release_folder(tmp_path / "rel", build)).tag
        assert [r["release"] for r in account.get("/releases").json()] == [tag]
        manifest = (tmp_path / "rel" / MANIFEST_FILE).read_bytes()
        approval = release.encode_approval(
            lambda d: owner.sign(d).signature, bytes(owner.verify_key), manifest
        )
        # a token of another account may not hand in this owner's approval; junk is refused
        assert (
            stranger.post(f"/releases/{tag}/approvals", json={"approval_hex": approval.hex()}).status_code
            == 403
        )
        assert account.post(f"/releases/{tag}/approvals", json={"approval_hex": "00" * 40}).status_code == 400
        assert (
            account.post(f"/releases/{'0' * 16}/approvals", json={"approval_hex": approval.hex()}).status_code
            == 404
        )
        assert account.post(f"/devices/{device_id}/update", json={"release": "../etc"}).status_code == 422
        assert account.post(f"/devices/{device_id}/update", json={"release": "0" * 16}).status_code == 404
        assert account.post(f"/releases/{tag}/approve").status_code == 403
        response = account.post(f"/releases/{tag}/approvals", json={"approval_hex": approval.hex()})
        assert response.json() == {"release": tag, "owner_id": owner_id}
        assert admin.get("/releases").json()[0]["approved_by"] == [owner_id]
        assert admin.post(f"/devices/{device_id}/update", json={"release": tag}).status_code == 202
        wait_for(
            lambda: admin.get(f"/devices/{device_id}/update").json()["state"] == "installed-on-probation",
            60,
            "the release installed",
        )
        assert device.wait_exit() == 0
        assert json.loads((tmp_path / "flash" / "slot.json").read_text())["trial"] == "slot_a"
        assert not (tmp_path / "rel" / APPROVAL_FILE).exists()
    finally:
        device.stop()
