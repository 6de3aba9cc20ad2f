"""A task the board needs that ends on an error resets the board (fp.device.Device.run): a
destination's sender or connection, or a sensor's loop, that stopped would leave the board silent
or blind with its main loop, and so its watchdog, still running."""

from __future__ import annotations

import json

import pytest

from host_agent.paths import BOARDS
from tests.helpers import run_firmware_script

SCRIPT = """
import asyncio
from fp import app
checked = app.load_settings()
device = app.build_device(app.load_hal(checked.board, checked.provision), checked, None)
async def fail():
    await asyncio.sleep(0.3)
    raise OSError(5)  # EIO, as a flash read in the sender could raise: any error ends a task
async def main():
    running = asyncio.create_task(device.run())
    await asyncio.sleep(0.5)  # destinations started, a reading from each sensor queued
    vendor = device.destinations["vendor"]
    print("queued", vendor.buffered)
    if {which!r} == "sender":
        vendor.sender.cancel()  # the test's task takes the sender's place, and ends on an error
        vendor.sender = asyncio.create_task(fail())
    else:
        device.sensor_tasks["env"].cancel()
        device.sensor_tasks["env"] = asyncio.create_task(fail())
    await running
try:
    asyncio.run(main())
except SystemExit:  # fp.hal_sim.reset: the unix port exits where a board resets
    vendor = device.destinations["vendor"]
    print("reset; in RAM", len(vendor.ram), "in flash", vendor.ring.pending)
"""


@pytest.mark.parametrize(("which", "name"), [("sender", "vendor"), ("sensor", "env")])
def test_a_task_that_ends_on_an_error_resets_the_board_with_its_queue_in_flash(tmp_path, which, name):
    (tmp_path / "board.json").write_text((BOARDS / "sim.json").read_text())
    # nobody listens on port 1: the readings wait in the destination's queue
    (tmp_path / "provision.json").write_text(json.dumps({"vendor": {"host": "127.0.0.1", "port": 1}}))
    out = run_firmware_script("micropython", SCRIPT.replace("{which!r}", repr(which)), cwd=tmp_path)
    lines = out.strip().splitlines()
    queued = int(next(line for line in lines if line.startswith("queued ")).split()[1])
    assert queued >= 2, lines  # one reading from each of the sim's two sensors at least
    assert f"fp: {name}: its task ended on an error; resetting" in lines, lines
    assert lines[-1] == f"reset; in RAM 0 in flash {queued}", lines
