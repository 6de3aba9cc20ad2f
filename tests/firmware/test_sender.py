"""A destination's sender (fp.destinations.Destination.send_forever) holds nothing it sent while it
waits: the last message (after a command, its signed ack) would otherwise stay in the board's heap
until the next one went out."""

from __future__ import annotations

import json

from host_agent.paths import BOARDS
from tests.helpers import run_firmware_script

SCRIPT = """
import asyncio, gc
from fp import app
checked = app.load_settings()
device = app.build_device(app.load_hal(checked.board, checked.provision), checked, None)
async def main():
    running = asyncio.create_task(device.run())
    vendor = None
    for _ in range(100):  # up to 10 s for the link and the card and status that open it
        await asyncio.sleep(0.1)
        vendor = device.destinations.get("vendor")
        if vendor and vendor.client.is_up and vendor.announced == vendor.client.connects:
            break
    else:
        raise SystemExit("never up")
    gc.collect()
    before = gc.mem_alloc()
    sent = vendor.sent
    device.put("ack", bytes(8192))  # an ack goes ahead of everything else
    for _ in range(100):
        await asyncio.sleep(0.1)
        if vendor.sent > sent and not vendor.acks:
            break
    else:
        raise SystemExit("never sent")
    await asyncio.sleep(0.2)  # the sender back in its wait
    gc.collect()
    print("held", gc.mem_alloc() - before)
    running.cancel()
asyncio.run(main())
"""


def test_the_sender_holds_no_message_it_sent_while_it_waits(tmp_path, mosquitto):
    (tmp_path / "board.json").write_text((BOARDS / "sim.json").read_text())
    vendor = {"host": mosquitto.host, "port": mosquitto.port}
    (tmp_path / "provision.json").write_text(json.dumps({"vendor": vendor}))
    out = run_firmware_script("micropython", SCRIPT, cwd=tmp_path)
    held = int(next(line for line in out.splitlines() if line.startswith("held ")).split()[1])
    # the 8 KB ack gone once sent; what else changed meanwhile (a reading or two) is far less
    assert held < 4096, out
