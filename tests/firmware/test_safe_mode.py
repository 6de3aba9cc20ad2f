"""Crash-loop safe mode (fp.safemode, fp.app.main): the real firmware under the unix port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from host_agent.owner import Owner
from host_agent.paths import firmware_dir
from tests.firmware.conftest import counter_board, owner_command, wait_for
from tests.helpers import FIRMWARE, micropython_binary, micropython_env

BOOTS = 3  # provision.json safe_mode_boots


def _lines(device, prefix: str) -> list[str]:
    return [line for line in list(device.log) if line.startswith(prefix)]


def test_a_crash_loop_ends_in_safe_mode_which_still_obeys_the_owner_and_reboots_into_normal(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    # The crash source: a module left half-written in flash (an interrupted copy), imported at start.
    code = tmp_path / "code"
    shutil.copytree(firmware_dir(), code)
    module = code / "fp" / "http_api.py"
    good = module.read_bytes()
    module.write_bytes(good[: len(good) // 2])

    vendor = collector_factory(mosquitto)
    owner = Owner(tmp_path / "owner.key")
    device = sim_devices(
        tmp_path / "flash",
        (mosquitto.host, mosquitto.port),
        counter_board(),
        owner_key=owner.public,
        code=code,
        provision={"safe_mode_boots": BOOTS},
    )
    for boot in range(BOOTS):
        device.start()
        assert device.wait_exit() == 0, "\n".join(device.log)  # the sim's reset: the process exits
        crashes = _lines(device, "fp: crash: ")
        assert len(crashes) == boot + 1, "\n".join(device.log)
        assert "Traceback" in crashes[-1] and "http_api" in crashes[-1]
        assert not [line for line in device.log if line.startswith("  File ")], "a multi-line traceback"
    assert not _lines(device, "fp: safe mode")
    assert vendor.values("n") == []

    statuses_before = len(vendor.statuses)
    device.start()  # boot BOOTS + 1
    device_id = device.device_id()
    wait_for(lambda: _lines(device, f"fp: safe mode: {BOOTS} boots in a row"), 10, "safe mode")
    # its first connection ever (the crashed boots never got that far): a command sent before its
    # subscription is in place would find no session at the broker, so wait for its status
    wait_for(lambda: len(vendor.statuses) > statuses_before, 10, "the device online in safe mode")
    info = owner_command(owner, vendor, device_id, "get-info", {})
    assert info["outcome"] == "applied"
    assert info["result"]["mode"] == "safe-mode" and info["result"]["unstable_boots"] == BOOTS + 1
    with vendor.lock:
        status = vendor.statuses[-1].body
    assert status["state"] == "online" and status["mode"] == "safe-mode"
    assert vendor.values("n") == [], "safe mode takes no readings"
    assert len(_lines(device, "fp: crash: ")) == BOOTS

    # a power cut does not end safe mode
    device.power_cut()
    device.start()
    wait_for(lambda: len(_lines(device, "fp: safe mode")) == 2, 10, "safe mode again")

    # the owner has the module repaired (flashing) and asks for a reboot: the next boot is normal
    module.write_bytes(good)
    assert owner_command(owner, vendor, device_id, "reboot", {})["outcome"] == "applied"
    assert device.wait_exit() == 0
    device.start()
    wait_for(lambda: len(vendor.values("n")) >= 3, 15, "readings after the reboot")
    wait_for(lambda: _lines(device, "fp: boot "), 5, "the boot marked stable")
    assert len(_lines(device, "fp: safe mode")) == 2
    info = owner_command(owner, vendor, device_id, "get-info", {})["result"]
    assert info["mode"] == "normal" and info["unstable_boots"] == 0


def test_a_healthy_device_power_cut_and_rebooted_again_and_again_never_enters_safe_mode(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    vendor = collector_factory(mosquitto)
    owner = Owner(tmp_path / "owner.key")
    device = sim_devices(
        tmp_path / "flash",
        (mosquitto.host, mosquitto.port),
        counter_board(),
        owner_key=owner.public,
        provision={"safe_mode_boots": 2},
    )
    for boot in range(5):
        device.start()
        device_id = device.device_id()
        wait_for(lambda boot=boot: len(_lines(device, "fp: boot ")) == boot + 1, 15, "a stable boot")
        if boot == 2:
            assert owner_command(owner, vendor, device_id, "reboot", {})["outcome"] == "applied"
            assert device.wait_exit() == 0
        else:
            device.power_cut()
    device.start()
    wait_for(lambda: len({r.boot for r in vendor.readings}) == 6, 15, "readings from all six boots")
    wait_for(lambda: len(_lines(device, "fp: boot ")) == 6, 5, "the sixth boot stable")
    info = owner_command(owner, vendor, device.device_id(), "get-info", {})["result"]
    assert info["mode"] == "normal" and info["unstable_boots"] == 0
    assert not _lines(device, "fp: safe mode") and not _lines(device, "fp: crash")


HISTORY = r"""
import json
from fp.safemode import BootHistory
out = []
def boot(now_s, power_on=False, boots=3, window_s=600):
    h = BootHistory(boots, window_s)
    h.start(now_s, power_on)
    out.append([h.unstable, h.is_safe])
    return h
for t in (1000, 1010, 1020):
    boot(t)
boot(1030)                    # three unstable boots before it: safe mode
boot(5000)                    # safe mode is not left by waiting...
boot(5010, power_on=True)     # ...nor by a power cycle
boot(5020).mark_stable()      # the owner's reboot
boot(6000)                    # normal again, counting from one
boot(6010).mark_stable()      # a stable boot clears the count
boot(6020)
boot(6030)
boot(6700)                    # the unstable boots began more than 600 s ago: they no longer count
boot(6710, power_on=True)     # the boot a power cut ended does not count
boot(None)                    # time unknown (a board before NTP): boots in a row count
boot(None)
with open("boot.hist", "w") as f:
    f.write("{torn")
boot(7000)                    # a damaged record counts from one
print(json.dumps(out))
"""

EXPECTED = [
    [1, False],
    [2, False],
    [3, False],
    [4, True],
    [5, True],
    [5, True],
    [6, True],
    [1, False],
    [2, False],
    [1, False],
    [2, False],
    [1, False],
    [1, False],
    [2, False],
    [3, False],
    [1, False],
]


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_boot_history_counts_unstable_boots_in_the_window_and_ignores_power_cuts(interpreter, tmp_path):
    if interpreter == "cpython":
        command, env = [sys.executable, "-c", HISTORY], dict(os.environ, PYTHONPATH=str(FIRMWARE))
    else:
        command, env = [micropython_binary(), "-c", HISTORY], micropython_env()
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == EXPECTED
