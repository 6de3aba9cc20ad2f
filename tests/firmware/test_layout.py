"""The firmware's seams: one definition per sensor type and per command operation, read by both
interpreters and by the host; the command interpreter in the heap only while a command runs."""

from __future__ import annotations

import json

import pytest

from fp import command, messages, sensor_types
from host_agent.commands import control as commands
from host_agent.paths import BOARDS
from tests.helpers import FIRMWARE, run_firmware_script

READ_EVERY_TYPE = """
import json
from fp import sensor_types
from fp.hal_sim import Board
board = Board({})
out = {}
for kind in sensor_types.for_port("unix"):
    sensor = {"name": "s", "type": kind, "interval_s": 1, "pin": 4}
    out[kind] = [board.read(sensor) for _ in range(3)]
print(json.dumps(out))
"""


def _rounded(readings):
    return [[[name, unit, round(value, 6)] for name, unit, value in reading] for reading in readings]


def test_every_sensor_type_reads_with_the_names_and_units_of_its_one_definition_under_both_interpreters():
    results = {
        name: json.loads(run_firmware_script(name, READ_EVERY_TYPE)) for name in ("cpython", "micropython")
    }
    assert set(results["cpython"]) == set(sensor_types.for_port("unix")) == set(sensor_types.TYPES)
    for kind, readings in results["micropython"].items():
        assert _rounded(readings) == _rounded(results["cpython"][kind]), kind
        for reading in readings:
            expected = [(name or "s", unit) for name, unit in sensor_types.TYPES[kind][3]]
            assert [(name, unit) for name, unit, _ in reading] == expected, kind


def test_an_esp32_board_cannot_name_a_type_only_the_sim_reads():
    assert "counter" not in sensor_types.for_port("esp32") and "counter" in sensor_types.for_port("unix")
    assert set(sensor_types._NAMES) == set(sensor_types.TYPES)


def test_the_host_offers_exactly_the_operations_the_device_interprets():
    assert commands.OPS is messages.OPS
    assert set(messages.OPS) == set(command.OPERATIONS) | {"claim"}


INTERPRETER_LIFETIME = """
import sys
from fp import app
checked = app.load_settings()
hal = app.load_hal(checked.board, checked.provision)
device = app.build_device(hal, checked, None)
loaded = lambda: sorted(n for n in ("fp.command", "fp.inbound", "fp.cose", "fp.messages", "fp.cbor_decode", "fp.settings", "fp.checked", "fp.pem", "fp.receipted") if n in sys.modules)
print(loaded())
ack = device.on_command(b"junk: not a COSE_Sign1 command")
print(ack is not None, device.refused, loaded())
"""


def test_the_command_interpreter_and_the_parsers_are_loaded_for_a_command_and_dropped_after(tmp_path):
    (tmp_path / "board.json").write_text((BOARDS / "sim.json").read_text())
    (tmp_path / "provision.json").write_text(json.dumps({"vendor": {"host": "127.0.0.1", "port": 1}}))
    lines = run_firmware_script("micropython", INTERPRETER_LIFETIME, cwd=tmp_path).strip().splitlines()
    out = [line for line in lines if not line.startswith("fp: ")]  # the device's own log lines
    assert "fp: command refused: malformed: 19 trailing bytes after the item" in lines
    assert out[-2] == "[]"  # after the boot checks: neither the checks nor the interpreter
    assert out[-1] == "True 1 []"  # the junk was refused with a signed ack, and nothing stayed


# A device claimed by the test's owner key (`owner`), the time as the device takes it (`now`),
# and the encoder the owner uses (fp.messages), which the scripts below drop before the device
# judges anything: the owner's tools are not the device's.
OWNED_DEVICE = """
import sys
from fp import app, ed25519, messages
from fp.runtime import unload
checked = app.load_settings()
device = app.build_device(app.load_hal(checked.board, checked.provision), checked, None)
owner = ed25519.SigningKey(bytes(range(32)))
device.identity.owner_key = owner.public
now = device.now()
"""

OPERATION_WITHOUT_PARSERS = (
    OWNED_DEVICE
    + """
from fp import command
data = messages.encode_command(owner.sign, owner.public, device.device_id, 1, now, now + 60, "get-info", {})
del messages
for name in ("messages", "inbound", "cose", "cbor_decode"):  # the owner's encoder is the test's, not the device's
    unload(name)
loaded = lambda: sorted(n for n in ("fp.command", "fp.inbound", "fp.cose", "fp.cbor_decode", "fp.settings") if n in sys.modules)
seen = []
get_info = command.OPERATIONS["get-info"]
command.OPERATIONS["get-info"] = lambda device, args: seen.append(loaded()) or get_info(device, args)
ack = device.on_command(data)
print(ack is not None, device.refused, seen, loaded())
"""
)


def test_a_command_s_operation_runs_with_the_parsers_and_the_decoder_dropped(tmp_path):
    """The parsers, the COSE parser and the CBOR decoder serve the judging of a command only:
    get-info, which reports the heap, runs (and measures) without them."""
    (tmp_path / "board.json").write_text((BOARDS / "sim.json").read_text())
    (tmp_path / "provision.json").write_text(json.dumps({"vendor": {"host": "127.0.0.1", "port": 1}}))
    lines = run_firmware_script("micropython", OPERATION_WITHOUT_PARSERS, cwd=tmp_path).strip().splitlines()
    out = [line for line in lines if not line.startswith("fp: ")]
    assert out[-1] == "True 0 [['fp.command']] []", lines


CHECKED_COMMANDS = (
    OWNED_DEVICE
    + """
commands = [
    messages.encode_command(owner.sign, owner.public, device.device_id, 1, now, now + 60, "set-interval", args)
    for args in ({"sensor": "env", "interval_s": 0}, {"sensor": "env", "interval_s": 60})
]
for name in ("messages", "inbound", "cose", "cbor_decode"):  # the owner's encoder is the test's
    unload(name)
loaded = lambda: sorted(n for n in ("fp.config_commands", "fp.settings", "fp.checked", "fp.command") if n in sys.modules)
for data in commands:
    device.on_command(data)
    print(device.refused, device.config["intervals"], loaded())
"""
)


def test_a_command_s_settings_check_leaves_neither_the_checks_nor_the_checked_copy_loaded(tmp_path):
    """set-interval checks its value with fp.settings, which loads fp.checked for its integer rule:
    refused or applied, both are dropped with the command."""
    (tmp_path / "board.json").write_text((BOARDS / "sim.json").read_text())
    (tmp_path / "provision.json").write_text(json.dumps({"vendor": {"host": "127.0.0.1", "port": 1}}))
    lines = run_firmware_script("micropython", CHECKED_COMMANDS, cwd=tmp_path).strip().splitlines()
    out = [line for line in lines if not line.startswith("fp: ")]
    assert out[-2:] == ["1 {} []", "1 {'env': 60} []"], lines


@pytest.mark.parametrize("kind", sorted(sensor_types.TYPES))
def test_a_sensor_type_needs_what_its_definition_says(kind):
    ports, needs, driver, metrics = sensor_types.TYPES[kind]
    assert set(ports) <= set(sensor_types.PORTS) and needs in (None, "pin", "i2c") and metrics
    source = (FIRMWARE / "fp" / "hal_sim.py").read_text()
    assert f"def read_{driver}(self, sensor)" in source  # the sim reads every type
    if "esp32" in ports:
        assert f"def read_{driver}(self, sensor)" in (FIRMWARE / "fp" / "hal_esp32.py").read_text()
