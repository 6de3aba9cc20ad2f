"""The firmware end to end on the unix port: signed readings/s into mosquitto, heap, flash writes, size.

Run: .venv/bin/python bench/bench_firmware.py
The device is the compiled firmware (as boards run it) on the board `sim`, sampling a counter
sensor as fast as it can; a subscriber on loopback verifies every reading (PyNaCl) and counts.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "firmware")]

from fp import messages, topics  # noqa: E402
from host_agent.board.build import compile_firmware  # noqa: E402
from host_agent.bus.mosquitto import Mosquitto  # noqa: E402
from host_agent.owner import Owner  # noqa: E402
from host_agent.paths import BOARDS  # noqa: E402
from host_agent.rig.simdevice import SimDevice  # noqa: E402
from tests.firmware.conftest import Collector  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

SECONDS = 10.0


def command(owner: Owner, collector: Collector, device_id: str, op: str, args: dict) -> dict:
    data = owner.command(device_id, op, args)
    digest = messages.parse_command(data).digest()
    collector.client.publish(topics.topic(device_id, "command"), data, qos=1)
    wait_for(lambda: digest in collector.acks, 30, op)  # acks queue behind buffered readings
    return collector.acks[digest]["result"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="fp-bench-firmware-"))
    build = compile_firmware("x64", work / "build")
    broker = Mosquitto(work / "broker").start()
    collector = Collector(broker)
    time.sleep(0.3)
    owner = Owner(work / "owner.key")
    board = json.loads((BOARDS / "sim.json").read_text())
    board["sensors"] = [{"name": "n", "type": "counter", "interval_s": 0.001}]
    device = SimDevice(
        work / "flash", (broker.host, broker.port), board, owner_key=owner.public, code=build.path
    )
    device.start()
    device_id = device.device_id()
    try:
        wait_for(lambda: len(collector.readings) >= 20, 20, "first readings")
        start_count, start = len(collector.readings), time.monotonic()
        time.sleep(SECONDS)
        rate = (len(collector.readings) - start_count) / (time.monotonic() - start)
        steady = command(owner, collector, device_id, "get-info", {})
        # buffering: one reading a second, network cut for 6 s
        command(owner, collector, device_id, "set-interval", {"sensor": "n", "interval_s": 1})
        time.sleep(1.5)
        before_info = command(owner, collector, device_id, "get-info", {})
        before = len(collector.values("n"))
        device.cut_network()
        time.sleep(6.0)
        device.restore_network()
        wait_for(lambda: len(collector.values("n")) > before + 3, 60, "readings after the cut")
        wait_for(
            lambda: command(owner, collector, device_id, "get-info", {})["buffered"] == 0, 60, "the drain"
        )
        after = command(owner, collector, device_id, "get-info", {})
        buffered_readings = len(collector.values("n")) - before
        writes = after["flash_writes"] - before_info["flash_writes"]
    finally:
        device.stop()
        collector.stop()
        broker.stop()
    print(f"signed readings published and verified end to end: {rate:.0f} /s")
    print(f"heap in use, steady state (gc.mem_alloc after collect): {steady['heap_bytes']} bytes")
    print(
        f"flash writes while the broker was unreachable: {writes} for {buffered_readings} readings "
        f"({writes / max(buffered_readings, 1):.2f} per reading); 0 while connected"
    )
    print(f"app size (.mpy + main.py, x64): {build.mpy_bytes} bytes; Ed25519 table: {build.data_bytes} bytes")
    print(f"refused at the subscriber: {collector.rejections or 0}")


if __name__ == "__main__":
    main()
