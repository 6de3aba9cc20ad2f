"""The sensor loops (fp.sampling): a new interval applies at once, and a sensor keeps one loop."""

from __future__ import annotations

import json

from host_agent.paths import BOARDS
from tests.helpers import run_firmware_script

NEW_INTERVAL = """
import asyncio
from fp import app
checked = app.load_settings()
device = app.build_device(app.load_hal(checked.board, checked.provision), checked, None)
counts = {"puts": 0}
def count(kind, payload):  # no destinations: count what the loops queue
    counts["puts"] += 1
device.put = count
async def main():
    for sensor in checked.board["sensors"]:  # env every 10 s, chip every 30 s (boards/sim.json)
        device.start_sampling(sensor)
    await asyncio.sleep(0.2)
    first = counts["puts"]  # one reading per sensor, then both loops asleep
    device.config["intervals"]["env"] = 3600
    from fp.config_commands import restart_sampling  # set-interval's, once config.json is saved
    restart_sampling(device, "env")
    restart_sampling(device, "env")  # twice before the new loop ran: still one loop
    restart_sampling(device, "nope")  # no such sensor: nothing
    await asyncio.sleep(0.2)
    second = counts["puts"]
    live = sorted(name for name, task in device.sensor_tasks.items() if not task.done())
    print(first, second, live)
    for task in device.sensor_tasks.values():
        task.cancel()
    await asyncio.sleep(0)
asyncio.run(main())
"""


def test_a_new_interval_takes_a_reading_at_once_and_the_sensor_keeps_one_loop(tmp_path):
    """Under MicroPython only: fp.device is the board's (time.ticks_ms)."""
    (tmp_path / "board.json").write_text((BOARDS / "sim.json").read_text())
    (tmp_path / "provision.json").write_text(json.dumps({"vendor": {"host": "127.0.0.1", "port": 1}}))
    lines = run_firmware_script("micropython", NEW_INTERVAL, cwd=tmp_path).strip().splitlines()
    out = [line for line in lines if not line.startswith("fp: ")]
    # a reading from each loop at its start; the changed sensor one more at once (its loop
    # restarted, cancelled in its sleep), not one per change; the other sensor none
    assert out[-1] == "2 3 ['chip', 'env']", lines


LATEST_KEPT = """
import asyncio
from fp import app
checked = app.load_settings()
device = app.build_device(app.load_hal(checked.board, checked.provision), checked, None)
device.put = lambda kind, payload: None  # no destinations
async def main():
    for has_http in (False, True):
        device.http = object() if has_http else None  # what fp.device.run sets when the API is on
        for sensor in checked.board["sensors"]:
            device.start_sampling(sensor)
        await asyncio.sleep(0.2)  # one reading per sensor
        for task in device.sensor_tasks.values():
            task.cancel()
        await asyncio.sleep(0)
        print(has_http, sorted(device.latest))
asyncio.run(main())
"""


def test_a_board_without_the_http_api_keeps_no_latest_reading(tmp_path):
    """The newest signed reading of each sensor (about 200 bytes each) is kept for the HTTP API's
    /readings/latest, its only reader: a board without the API holds none."""
    (tmp_path / "board.json").write_text((BOARDS / "sim.json").read_text())
    (tmp_path / "provision.json").write_text(json.dumps({"vendor": {"host": "127.0.0.1", "port": 1}}))
    lines = run_firmware_script("micropython", LATEST_KEPT, cwd=tmp_path).strip().splitlines()
    out = [line for line in lines if not line.startswith("fp: ")]
    assert out[-2:] == ["False []", "True ['chip', 'env']"], lines
