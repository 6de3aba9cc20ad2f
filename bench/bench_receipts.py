"""The cost of receipts: agent rate with and without, latency at a quarter of that rate, wire and flash.

Run: `.venv/bin/python bench/bench_receipts.py` (figures in docs/benchmarks.md, "Receipts").

- Agent end to end (verified + stored + routed, one core, 100 devices; bench_agent.end_to_end),
  rounds with and without receipts alternating in one run; goal: with receipts at most 5 % lower.
- Latency publish -> agent -> MQTT destination at one quarter of the end-to-end rate measured
  with receipts in this run (a fixed rate means different loads on different machines).
- Bytes on the wire per reading: the receipts the agent sent (payload + topic) over the readings
  they cover, at full rate (16 per receipt) and for a real device at 25 readings/s.
- Flash writes per reading on the device (the real firmware, unix port, against an agent with its
  embedded broker): the receipts rule against the PUBACK rule, steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_agent  # noqa: E402 (the bench's own helpers, beside this file)

from fp import ids  # noqa: E402
from host_agent import config as agent_config  # noqa: E402
from host_agent.rig.simdevice import SimDevice  # noqa: E402
from host_agent.service import start_in_thread  # noqa: E402
from host_agent.wire import nacl_public_key  # noqa: E402

DEVICE_BOARD = {
    "name": "sim",
    "port": "unix",
    "pins": {},
    "sensors": [{"name": "n", "type": "counter", "interval_s": 0.04}],
}


def device_run(root: Path, receipts: bool, seconds: float) -> dict:
    """The real firmware reporting to an agent (embedded broker) for `seconds`; its own counters."""
    workdir = root / f"device-{receipts}"
    settings = {
        "data_dir": str(workdir / "agent"),
        "auto_accept": True,
        "broker": {"embedded": True, "port": 0},
        "api": {"enabled": False},
    }
    agent, thread = start_in_thread(agent_config.from_dict(settings))
    flash = workdir / "flash"
    flash.mkdir(parents=True)
    seed = os.urandom(32)
    (flash / "key.seed").write_bytes(seed)
    device_id = ids.id_from_public_key(nacl_public_key(seed))
    home = dict(agent.home_destination(device_id), name="home")
    if not receipts:
        home.pop("receipts")
    (flash / "config.json").write_text(json.dumps({"destinations": [home]}))
    broker = agent.broker
    assert broker is not None
    device = SimDevice(flash, (broker.host, broker.port), board=DEVICE_BOARD, owner_key=agent.owner.public)
    device.start()
    try:
        device.device_id(20)
        device.enrol(agent)  # the embedded broker takes authenticated devices only (issue 15)
        time.sleep(seconds)
        assert agent.loop is not None
        info = asyncio.run_coroutine_threadsafe(agent.command(device_id, "get-info", {}), agent.loop).result(
            30
        )
        if info.result is None:
            raise SystemExit(f"the device did not answer get-info ({info.outcome}): {list(device.log)[-5:]}")
        stored = agent.store.count_readings()
        sent = agent.receipts.sent if agent.receipts else 0
        receipt_bytes = len(agent.receipts.receipt(device_id, [[1, 0, 1]])) if agent.receipts else 0
    finally:
        device.stop()
        agent.request_stop()
        thread.join(10)
    return {
        "stored": stored,
        "flash_writes": info.result["flash_writes"],
        "heap_bytes": info.result["heap_bytes"],
        "receipts": sent,
        "receipt_bytes": receipt_bytes + bench_agent.RECEIPT_TOPIC_BYTES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20000, help="readings in each end-to-end round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds with receipts, as many without")
    parser.add_argument("--latency-s", type=float, default=5.0, help="seconds of each latency stream")
    parser.add_argument("--device-s", type=float, default=20.0, help="seconds of each device run")
    args = parser.parse_args()
    agent_core, other_cores = bench_agent.cores()
    os.sched_setaffinity(0, other_cores)
    print(f"agent on core {min(agent_core)}; load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fp-bench-receipts-") as tmp:
        root = Path(tmp)
        runs: dict[bool, list[dict]] = {True: [], False: []}
        for index in range(args.rounds):
            # alternate which goes first, so that a drift of the machine's speed favours neither
            for receipts in (True, False) if index % 2 == 0 else (False, True):
                with bench_agent.collector_paused():
                    run = bench_agent.end_to_end(
                        root / f"e2e-{index}-{receipts}", agent_core, args.readings, receipts
                    )
                runs[receipts].append(run)
                print(
                    f"  round {index + 1}, receipts {'on ' if receipts else 'off'}: {run['rate']:,.0f} readings/s"
                    + (f", {run['receipts']:,} receipts" if receipts else ""),
                    flush=True,
                )
        with_rate = statistics.median(r["rate"] for r in runs[True])
        without_rate = statistics.median(r["rate"] for r in runs[False])
        ratio = with_rate / without_rate
        wire = sum(r["receipt_bytes"] for r in runs[True]) / (args.readings * args.rounds)
        sample = bench_agent.make_devices(1)[0].reading()
        reading_bytes = len(sample) + len(bench_agent.make_devices(1)[0].topic("reading"))
        quarter = int(with_rate / 4)
        latencies = {}
        for receipts in (True, False):
            with bench_agent.collector_paused():
                latencies[receipts] = bench_agent.latency(
                    root, agent_core, quarter, args.latency_s, bench_agent.NO_NAGLE, receipts
                )
        devices = {receipts: device_run(root, receipts, args.device_s) for receipts in (True, False)}
    print()
    rows = [
        ("end to end, receipts off (median)", f"{without_rate:,.0f} /s", "", None),
        ("end to end, receipts on (median)", f"{with_rate:,.0f} /s", "", None),
        ("receipts on / off", f"{100 * ratio:.1f} %", ">= 95 %", ratio >= 0.95),
    ]
    for receipts in (True, False):
        lat = latencies[receipts]
        rows.append(
            (
                f"latency at 1/4 of the rate ({lat['rate']:,.0f}/s), receipts {'on' if receipts else 'off'}",
                f"p50 {lat['p50']:.1f} / p99 {lat['p99']:.1f} ms",
                "",
                None,
            )
        )
    rows.append(
        (
            "receipt bytes per reading, full rate",
            f"{wire:.1f} B (reading {reading_bytes} B)",
            "",
            None,
        )
    )
    for receipts in (True, False):
        run = devices[receipts]
        name = "receipts" if receipts else "PUBACK"
        rows.append(
            (
                f"device at 25/s, {name} rule: flash writes per reading",
                f"{run['flash_writes'] / max(1, run['stored']):.3f} ({run['stored']} readings)",
                "",
                None,
            )
        )
    on = devices[True]
    rows.append(
        (
            "device at 25/s: receipt bytes per reading",
            f"{on['receipts'] * on['receipt_bytes'] / max(1, on['stored']):.1f} B ({on['receipts']} receipts)",
            "",
            None,
        )
    )
    rows.append(
        (
            "device heap in use, receipts / PUBACK",
            f"{on['heap_bytes']:,} / {devices[False]['heap_bytes']:,} B",
            "",
            None,
        )
    )
    bench_agent.print_results(rows, value_width=34, goal_width=8)


if __name__ == "__main__":
    main()
