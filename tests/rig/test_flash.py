"""`firstparty flash` puts the firmware on a board and reads back its card; every failure is one line."""

from __future__ import annotations

import json
import os
import subprocess
import time
import tty
from pathlib import Path
from types import SimpleNamespace

import pytest

from host_agent.board import flash
from host_agent.cli.main import main
from host_agent.owner import Owner
from tests.helpers import REPO, make_ca


def _flash(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["flash", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]


def test_flash_sim_into_the_virtual_board_boots_and_reads_back_a_card_naming_the_owner(
    virtual_board, tmp_path, capsys
):
    from host_agent import wire

    owner = Owner(tmp_path / "owner.key")
    card_path = tmp_path / "device.card"
    code, out, err = _flash(
        capsys,
        "--board", "sim", "--port", virtual_board.port, "--vendor", "127.0.0.1:1883",
        "--owner-key", str(tmp_path / "owner.key"), "--card-out", str(card_path),
    )  # fmt: skip
    assert code == 0, err
    card = wire.parse_card(card_path.read_bytes())  # raises unless the self-signature holds
    assert card.owner_id == owner.owner_id and card.board == "sim"
    assert f"firmware running as {card.device_id}" in out
    steps = [line for line in out.splitlines() if line.startswith("flash: ")]
    assert len(steps) >= 8  # progress, step by step
    flashed = virtual_board.flash
    assert json.loads((flashed / "board.json").read_text()) == json.loads(
        (REPO / "boards/sim.json").read_text()
    )
    provision = json.loads((flashed / "provision.json").read_text())
    assert provision["owner"] == owner.public.hex()
    assert provision["vendor"] == {"host": "127.0.0.1", "port": 1883}
    assert (flashed / "fp" / "app.mpy").exists() and (flashed / "main.py").exists()
    # this MicroPython has no ROM partition (vfs.rom_ioctl): the .mpy files, and the step says so
    assert "flash: no ROMFS partition on the board (mpremote romfs query): copying the .mpy files" in out
    assert "not registered with an agent (--owner-key without --config)" in out  # said, not faked


@pytest.mark.parametrize(
    ("out", "size"),
    [
        (
            "ROMFS0 partition has size 131072 bytes (32 blocks of 4096 bytes each)\n  Raw contents: d2:cd:31\n",
            131072,
        ),
        ("ROMFS is not enabled on this device\n", None),
        ("No ROMFS partitions available\n", None),
        ("", None),
    ],
)
def test_romfs_query_output_gives_the_partition_size_or_none(out, size):
    assert flash.parse_romfs_query(out) == size


def test_the_romfs_image_flash_builds_mounts_with_vfsrom_and_boots_the_firmware_from_it(tmp_path):
    """The image `firstparty flash` writes to a ROMFS partition: mounted at /rom as a board does
    (vfs.VfsRom, over the image read into memory: the unix port has no partition), with no fp/ folder
    anywhere else on the path, the firmware boots from it and delivers a reading."""
    from host_agent.board.build import compile_firmware
    from host_agent.bus.mosquitto import Mosquitto
    from host_agent.rig.simdevice import SimDevice
    from tests.firmware.conftest import Collector
    from tests.helpers import wait_for

    build = compile_firmware("x64", tmp_path / "build").path
    image = flash.build_romfs_image(build, tmp_path / "firmware.romfs")
    code = tmp_path / "code"  # main.py only: fp can come from nowhere but the image
    code.mkdir()
    mount = (
        f"import vfs\nwith open({str(image)!r}, 'rb') as _f:\n    vfs.mount(vfs.VfsRom(_f.read()), '/rom')\n"
    )
    (code / "main.py").write_text(mount + (build / "main.py").read_text())
    broker = Mosquitto(tmp_path / "broker").start()
    collector = Collector(broker)
    device = SimDevice(tmp_path / "flash", (broker.host, broker.port), code=code).start()
    try:
        device.device_id(20)
        wait_for(lambda: collector.readings, 20, "a reading from the firmware in the image")
    finally:
        device.stop()
        collector.stop()
        broker.stop()


def test_flash_refuses_a_board_that_is_another_chip(virtual_board, tmp_path, capsys):
    code, _, err = _flash(
        capsys, "--board", "esp32-devkitc", "--port", virtual_board.port, "--vendor", "h:1",
        "--owner-key", str(tmp_path / "owner.key"),
    )  # fmt: skip
    _one_line_error(code, err, "wrong chip", "esp32")
    assert not (virtual_board.flash / "main.py").exists()


def test_flash_refuses_firmware_too_big_for_the_flash(virtual_board, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(flash, "HEADROOM_BYTES", 1 << 50)
    code, _, err = _flash(
        capsys, "--board", "sim", "--port", virtual_board.port, "--vendor", "h:1",
        "--owner-key", str(tmp_path / "owner.key"),
    )  # fmt: skip
    _one_line_error(code, err, "firmware too big")


def test_flash_says_when_the_board_is_not_answering(tmp_path, capsys, monkeypatch):
    master, slave = os.openpty()  # a serial line with nothing behind it
    tty.setraw(slave)
    monkeypatch.setattr(flash, "MPREMOTE_TIMEOUT_S", 8)
    try:
        started = time.monotonic()
        code, _, err = _flash(
            capsys, "--board", "sim", "--port", os.ttyname(slave), "--vendor", "h:1",
            "--owner-key", str(tmp_path / "owner.key"),
        )  # fmt: skip
        assert time.monotonic() - started < 20
    finally:
        os.close(master)
        os.close(slave)
    _one_line_error(code, err, "not answering")


def test_flash_says_the_image_is_missing(tmp_path, capsys):
    port = tmp_path / "ttyUSB0"
    port.touch()
    code, _, err = _flash(
        capsys, "--board", "esp32-devkitc", "--port", str(port), "--vendor", "h:1",
        "--owner-key", str(tmp_path / "owner.key"), "--image", str(tmp_path / "missing.bin"),
    )  # fmt: skip
    _one_line_error(code, err, "missing.bin", "missing")


def test_flash_says_when_the_named_port_does_not_exist(tmp_path, capsys):
    code, _, err = _flash(
        capsys, "--board", "sim", "--port", "/dev/ttyNOPE9", "--vendor", "h:1",
        "--owner-key", str(tmp_path / "owner.key"),
    )  # fmt: skip
    _one_line_error(code, err, "/dev/ttyNOPE9")


@pytest.mark.parametrize(
    "ports,expected",
    [
        ([], "no USB serial port"),
        (["/dev/ttyUSB0", "/dev/ttyACM0"], "several serial ports"),
    ],
)
def test_port_auto_pick_needs_exactly_one_usb_port(ports, expected, monkeypatch, tmp_path, capsys):
    from serial.tools import list_ports

    found = [SimpleNamespace(device=p, vid=0x10C4) for p in ports] + [
        SimpleNamespace(device="/dev/ttyS0", vid=None)
    ]
    monkeypatch.setattr(list_ports, "comports", lambda: found)
    code, _, err = _flash(capsys, "--board", "sim", "--vendor", "h:1", "--owner-key", str(tmp_path / "k"))
    _one_line_error(code, err, expected)


def test_port_auto_pick_takes_the_only_usb_port(monkeypatch):
    from serial.tools import list_ports

    only = [
        SimpleNamespace(device="/dev/ttyUSB3", vid=0x1A86),
        SimpleNamespace(device="/dev/ttyS0", vid=None),
    ]
    monkeypatch.setattr(list_ports, "comports", lambda: only)
    assert flash.pick_port(None) == "/dev/ttyUSB3"


def test_flash_refuses_a_wifi_file_without_ssid(tmp_path, capsys):
    wifi = tmp_path / "wifi.json"
    wifi.write_text('{"password": "x"}')
    code, _, err = _flash(
        capsys, "--board", "sim", "--port", "/dev/null", "--vendor", "h:1", "--wifi", str(wifi),
        "--owner-key", str(tmp_path / "k"),
    )  # fmt: skip
    _one_line_error(code, err, "wifi.json", "ssid")


def test_flash_refuses_a_vendor_ca_that_is_not_a_pem_certificate(tmp_path, capsys):
    ca = tmp_path / "vendor-ca.pem"
    ca.write_text("-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n")
    code, _, err = _flash(
        capsys, "--board", "sim", "--port", "/dev/null", "--vendor", "h:8883", "--vendor-ca", str(ca),
        "--owner-key", str(tmp_path / "k"),
    )  # fmt: skip
    _one_line_error(code, err, "vendor-ca.pem", "PEM certificate")


def test_flash_with_a_vendor_ca_provisions_verified_tls(virtual_board, tmp_path, capsys):
    pem = make_ca(tmp_path, "ca").read_text()
    code, out, err = _flash(
        capsys, "--board", "sim", "--port", virtual_board.port, "--vendor", "127.0.0.1:8883",
        "--vendor-ca", str(tmp_path / "ca.pem"), "--owner-key", str(tmp_path / "owner.key"),
        "--card-out", str(tmp_path / "device.card"),
    )  # fmt: skip
    assert code == 0, err
    provision = json.loads((virtual_board.flash / "provision.json").read_text())
    assert provision["vendor"] == {"host": "127.0.0.1", "port": 8883, "tls": True, "ca": pem}
    assert "firmware running as" in out  # the firmware took the CA: a bad one stops it at boot


def _device_identity(folder: Path, name: str) -> None:
    """folder/name.crt and name.key, a device certificate signed by folder/ca.pem (made by openssl)."""
    subprocess.run(
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"],
        cwd=folder, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", f"{name}.crt", "-days", "2"],
        cwd=folder, check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_flash_refuses_a_client_key_that_is_not_the_certificates(tmp_path, capsys):
    make_ca(tmp_path, "ca")
    _device_identity(tmp_path, "one")
    _device_identity(tmp_path, "two")
    code, _, err = _flash(
        capsys, "--board", "sim", "--port", "/dev/null", "--vendor", "h:8883", "--vendor-ca", str(tmp_path / "ca.pem"),
        "--client-cert", str(tmp_path / "one.crt"), "--client-key", str(tmp_path / "two.key"),
        "--owner-key", str(tmp_path / "k"),
    )  # fmt: skip
    _one_line_error(code, err, "two.key", "does not belong to client certificate")


def test_flash_refuses_a_client_certificate_without_its_key_or_without_tls(tmp_path, capsys):
    make_ca(tmp_path, "ca")
    _device_identity(tmp_path, "one")
    base = ["--board", "sim", "--port", "/dev/null", "--vendor", "h:8883", "--owner-key", str(tmp_path / "k")]
    code, _, err = _flash(
        capsys, *base, "--vendor-ca", str(tmp_path / "ca.pem"), "--client-cert", str(tmp_path / "one.crt")
    )
    _one_line_error(code, err, "--client-cert and --client-key go together")
    code, _, err = _flash(
        capsys, *base, "--client-cert", str(tmp_path / "one.crt"), "--client-key", str(tmp_path / "one.key")
    )
    _one_line_error(code, err, "--client-cert needs --vendor-ca")


def test_flash_provisions_the_device_certificate_and_key_for_mutual_tls(virtual_board, tmp_path, capsys):
    ca_pem = make_ca(tmp_path, "ca").read_text()
    _device_identity(tmp_path, "dev")
    # the key as DER, as some vendors' consoles hand it out: provisioned as PEM all the same
    subprocess.run(
        ["openssl", "pkey", "-in", "dev.key", "-outform", "DER", "-out", "dev.key.der"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    code, out, err = _flash(
        capsys, "--board", "sim", "--port", virtual_board.port, "--vendor", "127.0.0.1:8883",
        "--vendor-ca", str(tmp_path / "ca.pem"), "--client-cert", str(tmp_path / "dev.crt"),
        "--client-key", str(tmp_path / "dev.key.der"), "--owner-key", str(tmp_path / "owner.key"),
        "--card-out", str(tmp_path / "device.card"),
    )  # fmt: skip
    assert code == 0, err
    vendor = json.loads((virtual_board.flash / "provision.json").read_text())["vendor"]
    assert vendor["ca"] == ca_pem and vendor["tls"] is True
    from fp import pem

    assert pem.certificates(vendor["client_cert"]) == pem.certificates((tmp_path / "dev.crt").read_text())
    assert pem.private_key(vendor["client_key"]) == (tmp_path / "dev.key.der").read_bytes()
    assert "firmware running as" in out  # the firmware took them: a bad one stops it at boot


def test_flash_with_a_running_agent_enrols_the_device_with_its_broker_keeping_only_a_hash(
    virtual_board, tmp_path, capsys
):
    import base64
    import hashlib

    from fp.ids import broker_password
    from host_agent import config as agent_config
    from host_agent import wire
    from host_agent.cli.common import write_runtime
    from host_agent.service import start_in_thread

    settings = {
        "data_dir": str(tmp_path / "agent"),
        "broker": {"embedded": True, "port": 0},
        "api": {"port": 0},
    }
    agent, thread = start_in_thread(agent_config.from_dict(settings))
    try:
        config_path = tmp_path / "firstparty.toml"
        config_path.write_text(f'data_dir = "{agent.config.data_dir}"\n')
        write_runtime(agent.config, agent.api_port, agent.store)
        card_path = tmp_path / "device.card"
        code, out, err = _flash(
            capsys,
            "--board", "sim", "--port", virtual_board.port, "--vendor", "127.0.0.1:1883",
            "--config", str(config_path), "--card-out", str(card_path),
        )  # fmt: skip
        assert code == 0, err
        device_id = wire.parse_card(card_path.read_bytes()).device_id
        host, port = agent.devices_endpoint()
        assert f"enrolled with its broker {host}:{port}" in out
        password = broker_password((virtual_board.flash / "key.seed").read_bytes(), host, port)
        assert password not in out
        hashed = agent.broker.accounts()[device_id]
        _, kind, iterations, salt, digest = hashed.split("$")
        assert kind == "7"
        computed = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
        assert base64.b64encode(computed).decode() == digest  # the device's own password, as a hash
    finally:
        agent.request_stop()
        thread.join(15)


def test_flash_with_a_vendor_receipt_key_makes_the_device_keep_readings_for_that_keys_receipts_only(
    virtual_board, mosquitto, tmp_path, capsys
):
    """The flashed device (the real firmware on the virtual board) reports to a vendor agent on a
    plain broker: it takes the receipts that agent signs, refuses receipts signed by any other
    key (counted, nothing dropped), and every reading it made is stored once."""
    import asyncio

    import paho.mqtt.client as mqtt

    from fp import messages, topics
    from host_agent import config as agent_config
    from host_agent import wire
    from host_agent.service import start_in_thread
    from tests.agent.conftest import agent_settings, wait_for

    vendor, thread = start_in_thread(
        agent_config.from_dict(agent_settings(tmp_path, mosquitto, role="vendor"))
    )
    attacker = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="attacker")
    try:
        assert vendor.receipts is not None
        key_hex = vendor.receipts.public.hex()
        code, out, err = _flash(
            capsys, "--board", "sim", "--port", virtual_board.port, "--vendor", f"127.0.0.1:{mosquitto.port}",
            "--vendor-receipt-key", key_hex.upper(), "--owner-key", str(vendor.config.owner_key),
            "--card-out", str(tmp_path / "device.card"),
        )  # fmt: skip
        assert code == 0, err
        provision = json.loads((virtual_board.flash / "provision.json").read_text())
        assert provision["vendor"] == {"host": "127.0.0.1", "port": mosquitto.port, "receipts": key_hex}
        device_id = wire.parse_card((tmp_path / "device.card").read_bytes()).device_id

        def command(op: str, args: dict):
            future = asyncio.run_coroutine_threadsafe(vendor.command(device_id, op, args), vendor.loop)
            return future.result(30)

        wait_for(lambda: vendor.store.device(device_id), 30, "the device's card at the vendor")
        assert command("set-interval", {"sensor": "chip", "interval_s": 1}).outcome == "applied"

        def info() -> dict:
            result = command("get-info", {})
            assert result.outcome == "applied", result
            return result.result

        first = info()
        assert first["delivery"] == {"vendor": "receipts"}
        # the vendor's own receipts are taken: the device lets go of what they cover
        wait_for(lambda: info()["receipts"]["vendor"][0] >= 2, 30, "the vendor's receipts taken")
        other_seed = os.urandom(32)
        everything = [[boot, 0, 0xFFFFFFFF] for boot in range(first["boot"] + 1)]
        forged = [
            messages.encode_receipt(
                wire.nacl_signer(other_seed), wire.nacl_public_key(other_seed), device_id, 2**62, everything
            ),
            # the other key naming itself as the vendor's: the signature does not hold
            messages.encode_receipt(
                wire.nacl_signer(other_seed), vendor.receipts.public, device_id, 2**62, everything
            ),
        ]
        attacker.connect(mosquitto.host, mosquitto.port)
        attacker.loop_start()
        before = info()["receipts"]["vendor"]
        for data in forged:
            attacker.publish(topics.topic(device_id, "receipt"), data, qos=1).wait_for_publish(5)
        after = wait_for(
            lambda: (seen := info()["receipts"]["vendor"])[1] >= before[1] + len(forged) and seen,
            20,
            "both forged receipts refused",
        )
        assert after[1] == before[1] + len(forged)
        assert command("set-interval", {"sensor": "chip", "interval_s": 86400}).outcome == "applied"
        last = wait_for(lambda: (now := info())["buffered"] == 0 and now, 30, "nothing left on the device")
        assert last["dropped"] == 0 and last["receipts"]["vendor"][0] > before[0]
        rows = vendor.store.query("SELECT raw FROM messages WHERE kind='reading'")
        counters = [messages.counter_of(bytes(row[0])) for row in rows]
        assert len(counters) == len(set(counters)) and len(counters) >= 3
    finally:
        attacker.loop_stop()
        attacker.disconnect()
        vendor.request_stop()
        thread.join(15)


def test_flash_refuses_a_release_key_that_is_not_64_hex_digits(tmp_path, capsys):
    code, _, err = _flash(
        capsys, "--board", "sim", "--port", "/dev/null", "--vendor", "h:1", "--release-key", "zz" * 32,
        "--owner-key", str(tmp_path / "k"),
    )  # fmt: skip
    _one_line_error(code, err, "--release-key", "64 hex digits")
