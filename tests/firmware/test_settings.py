"""Config validation at boot (fp.settings): one line per bad value, and the device runs on the defaults."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from host_agent.owner import Owner
from tests.firmware.conftest import counter_board, owner_command, wait_for
from tests.helpers import FIRMWARE, micropython_binary, micropython_env

# (file, key) of every problem planted below: each must be named by exactly one log line
PROBLEMS = [
    ("provision.json", "colour"),
    ("provision.json", "vendor.tls"),
    ("provision.json", "wifi"),
    ("provision.json", "claim_window_s"),
    ("provision.json", "http_port"),
    ("provision.json", "safe_mode_boots"),
    ("provision.json", "safe_mode_window_s"),
    ("provision.json", "release_keys"),
    ("board.json", "pins.led"),
    ("board.json", "sensors[1].type"),
    ("board.json", "sensors[2].pin"),
    ("board.json", "sensors[3]"),
    ("board.json", "sensors[4].name"),
    ("board.json", "sensors[5].interval_s"),
    ("config.json", "extra"),
    ("config.json", "destinations[0].host"),
    ("config.json", "destinations[1].(entry)"),
    ("config.json", "destinations[3].name"),
    ("config.json", "intervals.n"),
    ("config.json", "intervals.ghost"),
]


def test_a_device_with_many_bad_settings_logs_one_line_each_and_runs_on_the_defaults(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    vendor = collector_factory(mosquitto)
    owner = Owner(tmp_path / "owner.key")
    board = counter_board(0.2)
    board["pins"]["led"] = "x"
    board["sensors"] += [
        {"name": "g", "type": "geiger", "interval_s": 1},
        {"name": "a", "type": "adc", "interval_s": 1},  # no pin
        "junk",
        {"name": "n", "type": "counter", "interval_s": 1},  # the name is taken
        {"name": "m", "type": "counter", "interval_s": -5},
    ]
    device = sim_devices(
        tmp_path / "flash",
        (mosquitto.host, mosquitto.port),
        board,
        owner_key=owner.public,
        provision={
            "vendor": {"host": mosquitto.host, "port": mosquitto.port, "tls": "yes"},
            "colour": "blue",
            "wifi": "home",
            "claim_window_s": 0,
            "http_port": 70000,
            "safe_mode_boots": "many",
            "safe_mode_window_s": 5,
            "release_keys": ["not a key"],
        },
    )
    config = {
        "destinations": [
            {"name": "home", "host": "", "port": 1},
            5,
            {"name": "vendor"},
            {"name": "vendor"},  # the name is taken
        ],
        "intervals": {"n": 0, "ghost": 5, "m": 1},
        "extra": True,
    }
    (device.flash / "config.json").write_text(json.dumps(config))
    device_id = device.start().device_id()

    wait_for(lambda: len(vendor.values("n")) >= 10 and len(vendor.values("m")) >= 2, 15, "readings")
    lines = [line[4:] for line in device.log if re.match(r"fp: \S+\.json: ", line)]
    for path, key in PROBLEMS:
        named = [line for line in lines if line.startswith(f"{path}: {key}: expected ")]
        assert len(named) == 1 and " found " in named[0], (path, key, "\n".join(lines))
        assert "; using " in named[0] or named[0].endswith("; ignored"), named[0]
    assert len(lines) == len(PROBLEMS), lines
    assert not [line for line in device.log if "http:" in line]  # the bad port fell back to off

    info = owner_command(owner, vendor, device_id, "get-info", {})["result"]
    assert info["destinations"] == ["vendor"] and info["intervals"] == {"m": 1}
    # the owner command path applies the very check config.json gets at boot
    bad = {"destinations": [{"name": "../up", "host": "127.0.0.1", "port": 1883}]}
    ack = owner_command(owner, vendor, device_id, "set-destinations", bad)
    assert ack["outcome"] == "bad-command" and "name" in ack["detail"]


def test_an_unusable_vendor_endpoint_is_the_one_fatal_problem(mosquitto, sim_devices, tmp_path):
    device = sim_devices(
        tmp_path / "flash", (mosquitto.host, mosquitto.port), provision={"vendor": {"host": ""}}
    )
    device.start()
    assert device.wait_exit() == 1
    assert [line for line in device.log if line.startswith("fp: provision.json: vendor.host: expected ")]


CHECKS = r"""
import json
from fp import settings
lines = []
log = lines.append
out = {}
out["not_a_map"] = settings.check_provision([1], "unix", log)
out["no_vendor"] = settings.check_provision({}, "unix", log)
key = "AB" * 32
p = settings.check_provision(
    {"vendor": {"host": "h", "port": "x", "user": 5, "password": "pw", "colour": 1, "receipts": "cd" * 31},
     "owner": "abc", "wifi": {"ssid": "s", "password": "hunter2" * 10}, "http_port": "80"}, "esp32", log)
out["provision"] = p
out["owner_upper_hex"] = settings.check_provision({"vendor": {"host": "h"}, "owner": key}, "unix", log)["owner"]
out["defaults"] = settings.check_provision({"vendor": {"host": "h"}}, "unix", log)
out["first_boot_config"] = settings.check_config(None, ["t"], log)
out["five"] = [d["name"] for d in settings.check_config(
    {"destinations": [{"name": "d%d" % i, "host": "h"} for i in range(5)]}, ["t"], log)["destinations"]]
out["none_usable"] = settings.check_config({"destinations": [{"name": "x"}]}, ["t"], log)["destinations"]
board = settings.check_board({"name": 3, "port": "zephyr", "pins": {"led": 2, "button": 99}, "sensors": [
    {"name": "t", "type": "bme280", "i2c_address": 300}, {"name": "c", "type": "counter"}],
    "queue_slots": 5000}, log)
out["board"] = [board["name"], board["port"], board["pins"], board["sensors"], board["queue_slots"]]
out["queue_slots"] = [settings.check_board({"name": "b", "port": "unix", "sensors": [], "queue_slots": n}, log)["queue_slots"]
    for n in (1024, 16, None)]
out["esp32_has_no_counter"] = len(settings.check_board(
    {"name": "b", "port": "esp32", "sensors": [{"name": "c", "type": "counter"}]}, log)["sensors"])
from fp import checked
out["owner_missing"] = checked.load_owner(log, key).hex()
with open("owner.key", "w") as f:
    f.write("not json")
out["owner_damaged"] = checked.load_owner(log, key)
with open("cmd.cnt", "w") as f:
    f.write('"seven"')
out["counter_damaged"] = checked.load_counter(log)
out["broker_problem"] = list(settings.broker_problem({"name": "ok", "host": "h", "port": 0}))
out["receipts_problem"] = list(settings.broker_problem({"name": "home", "host": "h", "receipts": 7}))
out["receipts_ok"] = settings.broker_problem({"name": "home", "host": "h", "receipts": "cd" * 32})
out["vendor_receipts"] = settings.check_provision({"vendor": {"host": "h", "receipts": "cd" * 32}}, "unix", log)["vendor"]
out["lines"] = lines
print(json.dumps(out))
"""


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_each_bad_value_is_one_line_naming_file_key_expected_found_and_default(interpreter, tmp_path):
    if interpreter == "cpython":
        command, env = [sys.executable, "-c", CHECKS], dict(os.environ, PYTHONPATH=str(FIRMWARE))
    else:
        command, env = [micropython_binary(), "-c", CHECKS], micropython_env()
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["not_a_map"] is None and out["no_vendor"] is None
    assert out["provision"] == {
        "vendor": {"host": "h", "port": 1883, "password": "pw"},
        "wifi": {},
        "owner": None,
        "claim_window_s": 120,
        "http_port": 80,  # the default on a board
        "safe_mode_boots": 5,
        "safe_mode_window_s": 600,
        "release_keys": [],
    }
    assert out["owner_upper_hex"] == "AB" * 32
    assert out["defaults"]["http_port"] == 0  # off on the unix port unless asked for
    assert out["first_boot_config"] == {"destinations": [{"name": "vendor"}], "intervals": {}}
    assert out["five"] == ["d0", "d1", "d2", "d3"]
    assert out["none_usable"] == [{"name": "vendor"}]
    name, port, pins, sensors, queue_slots = out["board"]
    assert name == "unknown" and port == "unix" and queue_slots == 128
    assert out["queue_slots"] == [1024, 16, 128]
    assert pins == {"led": 2, "button": None, "i2c_sda": None, "i2c_scl": None}
    assert sensors == [
        {"name": "t", "type": "bme280", "i2c_address": 0x76, "interval_s": 10},
        {"name": "c", "type": "counter", "interval_s": 10},
    ]
    assert out["esp32_has_no_counter"] == 0
    assert out["owner_missing"] == "ab" * 32 and out["owner_damaged"] is None
    assert out["counter_damaged"] == 0
    assert out["broker_problem"] == ["port", "an integer 1..65535", 0]
    assert out["receipts_problem"] == [
        "receipts",
        "the receipt key of an agent that stores readings (64 hex digits)",
        7,
    ]
    assert out["receipts_ok"] is None
    assert out["vendor_receipts"] == {"host": "h", "port": 1883, "receipts": "cd" * 32}

    lines = out["lines"]
    expected = [
        "provision.json: (whole file): expected a map",
        "provision.json: vendor.host: expected a host name or address, found None; cannot run",
        "provision.json: vendor.port: expected an integer 1..65535, found 'x'; using 1883",
        "provision.json: vendor.user: expected text, found 5; using none",
        "provision.json: vendor.colour: expected one of host, port, user, password, tls, ca, client_cert, client_key, receipts, found an",
        "provision.json: vendor.receipts: expected a receipt key as 64 hex digits, found 'cdcd",
        "provision.json: wifi: expected a map with ssid",
        "provision.json: owner: expected an Ed25519 public key as 64 hex digits, found 'abc'; using no owner",
        "provision.json: http_port: expected an integer 0..65535, found '80'; using 80",
        "config.json: destinations: expected at most 4 destinations, found 5; using the first 4",
        "config.json: destinations[0].host: expected a host name or address, found None; using nothing",
        "config.json: destinations: none is usable; using the vendor only",
        "board.json: name: expected the board's name, found 3; using 'unknown'",
        "board.json: port: expected esp32 or unix, found 'zephyr'; using unix (this interpreter)",
        "board.json: pins.button: expected a GPIO number 0..48 or null, found 99; using null",
        "board.json: queue_slots: expected an integer 16..1024, found 5000; using 128",
        "board.json: queue_slots: expected an integer 16..1024, found None; using 128",
        "board.json: sensors[0].i2c_address: expected an I2C address 0..127, found 300; using 118",
        "board.json: sensors[0].type: expected one of internal-temp, adc, dht22, bme280, found 'counter'",
        "owner.key: (whole file): expected 64 hex digits, found 'not json'; using no owner",
        "cmd.cnt: (whole file): expected an integer, found 'seven'; using 0",
    ]
    assert len(lines) == len(expected), lines
    for start in expected:  # in any order: a MicroPython dict does not keep insertion order
        assert len([line for line in lines if line.startswith(start)]) == 1, (start, lines)
    assert not [line for line in lines if "hunter2" in line], "a password reached the log"
