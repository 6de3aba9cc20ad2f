"""fp.mqtt's QoS 1 and QoS 2 publish rate and acknowledgement round trip, under MicroPython and
CPython, against paho-mqtt on the same mosquitto, in one run; figures printed with their ratio to
paho's at the same QoS, and each QoS 2 figure with its ratio to the same client's QoS 1.

Run: .venv/bin/python bench/bench_mqtt.py [--messages 20000] [--round-trips 2000]
- rate: MESSAGES publishes of 64 bytes, with up to WINDOW unacknowledged (paho:
  max_inflight_messages_set(WINDOW); fp.mqtt: max_inflight=WINDOW, WINDOW tasks publishing);
- round trip: one publish at a time, from the call to its PUBACK (QoS 1) or PUBCOMP (QoS 2),
  median and p99.
Loopback, one mosquitto; each client runs alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "firmware")]

import paho.mqtt.client as paho  # noqa: E402

from host_agent.bus.mosquitto import Mosquitto  # noqa: E402
from tests.helpers import micropython_binary, micropython_env  # noqa: E402

WINDOW = 16
PAYLOAD = bytes(64)

# the same code under both interpreters: times in microseconds from time.ticks_us (MicroPython) or
# time.perf_counter_ns (CPython)
FP_SCRIPT = """
import asyncio, json, time
from fp.mqtt import Broker
from fp.mqtt_subscribe import SubscribingClient
try:
    from time import ticks_us, ticks_diff
except ImportError:
    def ticks_us():
        return time.perf_counter_ns() // 1000
    def ticks_diff(a, b):
        return a - b
PORT, MESSAGES, ROUND_TRIPS, WINDOW, QOS = %d, %d, %d, %d, %d
PAYLOAD = bytes(64)
async def main():
    client = SubscribingClient(Broker("127.0.0.1", PORT), "bench-fp", keepalive_s=60, max_inflight=WINDOW,
                        max_queued=WINDOW, read_chunk=4096)
    task = asyncio.create_task(client.run())
    await client.wait_up(10)
    state = [0]
    async def worker():
        while state[0] < MESSAGES:
            state[0] += 1
            await client.publish("bench/t", PAYLOAD, qos=QOS)
    start = ticks_us()
    await asyncio.gather(*[worker() for _ in range(WINDOW)])
    rate_us = ticks_diff(ticks_us(), start)
    trips = []
    for _ in range(ROUND_TRIPS):
        start = ticks_us()
        await client.publish("bench/t", PAYLOAD, qos=QOS)
        trips.append(ticks_diff(ticks_us(), start))
    client.stop()
    await asyncio.sleep(0.3)
    print(json.dumps({"rate": MESSAGES * 1e6 / rate_us, "trips_us": trips}))
asyncio.run(main())
"""


def fp_mqtt(interpreter: str, port: int, messages: int, round_trips: int, qos: int) -> dict:
    script = FP_SCRIPT % (port, messages, round_trips, WINDOW, qos)
    if interpreter == "micropython":
        command, env = [micropython_binary(), "-c", script], micropython_env()
    else:
        command, env = [sys.executable, "-c", script], {**os.environ, "PYTHONPATH": str(REPO / "firmware")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def paho_mqtt(port: int, messages: int, round_trips: int, qos: int) -> dict:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-paho")
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    start = time.perf_counter()
    infos = [client.publish("bench/t", PAYLOAD, qos=qos) for _ in range(messages)]
    for info in infos:
        info.wait_for_publish(30)
    rate = messages / (time.perf_counter() - start)
    trips = []
    for _ in range(round_trips):
        start = time.perf_counter()
        client.publish("bench/t", PAYLOAD, qos=qos).wait_for_publish(30)
        trips.append((time.perf_counter() - start) * 1e6)
    client.loop_stop()
    client.disconnect()
    return {"rate": rate, "trips_us": trips}


def summary(result: dict) -> tuple[float, float, float]:
    trips = sorted(result["trips_us"])
    return result["rate"], statistics.median(trips), trips[int(len(trips) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--round-trips", type=int, default=2000)
    args = parser.parse_args()
    clients = ["paho-mqtt (CPython)", "fp.mqtt (CPython)", "fp.mqtt (MicroPython unix)"]
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="fp-bench-mqtt-") as work:
        broker = Mosquitto(Path(work)).start()
        try:
            # each client at QoS 1 then at once at QoS 2: on a shared machine the load drifts less
            # between the two figures a ratio compares
            for qos in (1, 2):
                results[clients[0], qos] = paho_mqtt(broker.port, args.messages, args.round_trips, qos)
            for interpreter, name in (("cpython", clients[1]), ("micropython", clients[2])):
                for qos in (1, 2):
                    results[name, qos] = fp_mqtt(
                        interpreter, broker.port, args.messages, args.round_trips, qos
                    )
        finally:
            broker.stop()
    print(
        f"{len(PAYLOAD)}-byte payload, window {WINDOW}, {args.messages} messages, {args.round_trips} round trips;"
        " x paho: vs paho at the same QoS; x QoS 1: vs the same client at QoS 1"
    )
    print(
        f"{'client':28} {'QoS':>3} {'publish/s':>10} {'x paho':>7} {'x QoS 1':>8} {'RTT median us':>14}"
        f" {'x paho':>7} {'x QoS 1':>8} {'RTT p99 us':>11} {'x paho':>7}"
    )
    for qos in (1, 2):
        base_rate, base_median, base_p99 = summary(results[clients[0], qos])
        for name in clients:
            rate, median, p99 = summary(results[name, qos])
            qos1_rate, qos1_median, _ = summary(results[name, 1])
            print(
                f"{name:28} {qos:3} {rate:10.0f} {rate / base_rate:7.2f} {rate / qos1_rate:8.2f}"
                f" {median:14.0f} {median / base_median:7.2f} {median / qos1_median:8.2f}"
                f" {p99:11.0f} {p99 / base_p99:7.2f}"
            )


if __name__ == "__main__":
    main()
