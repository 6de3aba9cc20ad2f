"""Board data files: every board validates, errors name the key, and a new board is one new file."""

from __future__ import annotations

import json
import shutil

import pytest

from host_agent.board import files as boards
from host_agent.board.build import compile_firmware
from host_agent.errors import UserError
from host_agent.paths import BOARDS

REQUIRED = {"esp32-devkitc", "esp32-s3-devkitc-1", "esp32-c3-devkitm-1", "lolin-d32", "sim"}


def test_every_board_file_follows_the_schema_and_the_required_boards_exist():
    assert REQUIRED <= set(boards.names())
    for name in boards.names():
        board = boards.load(name)
        assert board["name"] == name


@pytest.mark.parametrize(
    "change,key",
    [
        (lambda b: b.update(mpy_arch="xtensa-lx7"), "mpy_arch"),
        (lambda b: b["pins"].update(led=99), "pins.led"),
        (lambda b: b["sensors"].append({"name": "x", "type": "geiger", "interval_s": 1}), "type"),
        (lambda b: b.update(colour="blue"), "colour"),
        (lambda b: b.pop("flash_bytes"), "flash_bytes"),
        (lambda b: b.update(name="other"), "name"),
        (lambda b: b.update(queue_slots=8), "queue_slots"),
        (lambda b: b.update(queue_slots=1025), "queue_slots"),
        (lambda b: b.update(queue_slots="1024"), "queue_slots"),
        (lambda b: b.update(queue_slots=True), "queue_slots"),
        # 1024 slots of 512 bytes for 4 destinations is 2 MB: more than half of a 2 MB flash
        (lambda b: b.update(queue_slots=1024, flash_bytes=2 * 1024 * 1024), "queue_slots"),
    ],
)
def test_a_bad_board_file_is_one_error_naming_file_key_expected_and_found(tmp_path, change, key):
    board = json.loads((BOARDS / "esp32-devkitc.json").read_text())
    change(board)
    (tmp_path / "esp32-devkitc.json").write_text(json.dumps(board))
    with pytest.raises(UserError) as error:
        boards.load("esp32-devkitc", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "esp32-devkitc.json") in message and key in message and "expected" in message


def test_adding_a_board_is_adding_one_file(tmp_path):
    folder = tmp_path / "boards"
    shutil.copytree(BOARDS, folder)
    new = json.loads((BOARDS / "esp32-c3-devkitm-1.json").read_text())
    new.update(name="my-c3-sensor", description="a temporary board for this test")
    new["sensors"] = [{"name": "air", "type": "dht22", "interval_s": 10, "pin": 2}]
    (folder / "my-c3-sensor.json").write_text(json.dumps(new))
    board = boards.load("my-c3-sensor", folder)
    assert "my-c3-sensor" in boards.names(folder)
    build = compile_firmware(board["mpy_arch"], tmp_path / "build")
    assert (build.path / "fp" / "app.mpy").exists() and build.arch == "rv32imc"


def test_the_esp32_hardware_layer_compiles_for_every_board_architecture(tmp_path):
    """No board here: mpy-cross for xtensawin and rv32imc is the import check of the ESP32 code."""
    for arch in sorted({boards.load(name)["mpy_arch"] for name in boards.names()}):
        build = compile_firmware(arch, tmp_path / arch)
        for module in ("hal_esp32", "bme280", "app", "sha512", "ed25519"):
            assert (build.path / "fp" / f"{module}.mpy").stat().st_size > 0


def test_a_board_may_size_its_flash_queues_within_the_devices_cap():
    board = json.loads((BOARDS / "esp32-devkitc.json").read_text())
    assert "queue_slots" not in board  # the device's default, 128
    for slots in (16, 512, 1024):
        board["queue_slots"] = slots
        assert boards.validate(BOARDS / "esp32-devkitc.json", board)["queue_slots"] == slots


@pytest.mark.parametrize(
    ("sensor", "key"),
    [
        ({"name": "n", "type": "counter", "interval_s": 1}, "sensors[3].type"),  # the sim's only
        ({"name": "dark", "type": "adc", "interval_s": 1}, "sensors[3].pin"),  # no pin
        ({"name": "air", "type": "dht22", "interval_s": 1, "pin": 99}, "sensors[3].pin"),
        ({"name": "chip", "type": "internal-temp", "interval_s": 1}, "sensors[3].name"),  # taken
    ],
)
def test_a_board_file_the_device_would_boot_without_a_sensor_is_refused_on_the_host(tmp_path, sensor, key):
    """The host runs the device's own board check (fp.settings) in strict mode: what the device
    would drop at boot with a log line is an error before anything is flashed."""
    board = json.loads((BOARDS / "esp32-devkitc.json").read_text())
    assert len(board["sensors"]) == 3
    board["sensors"].append(sensor)
    (tmp_path / "esp32-devkitc.json").write_text(json.dumps(board))
    with pytest.raises(UserError) as error:
        boards.load("esp32-devkitc", tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'esp32-devkitc.json'}: {key}: expected "), message
    assert "; using" not in message
