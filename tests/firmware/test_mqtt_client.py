"""The board's MQTT client (fp.mqtt) against real mosquitto and against a hostile broker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from host_agent.mosquitto import free_port
from tests.helpers import FIRMWARE

# What the hostile broker sends after reading the client's CONNECT, one behaviour per connection.
HOSTILE = [
    b"\x20\x03\x00\x00\x00",  # CONNACK with a wrong length
    b"\x20\x02\x00\x00" + b"\x30\xff\xff\xff\xff\x7f",  # remaining length longer than 4 bytes
    b"\x20\x02\x00\x00" + b"\x30\xff\xff\xff\x7f",  # 268 MB packet announced
    b"\x20\x02\x00\x00" + b"\x10\x02\x00\x00",  # a CONNECT from the broker
    b"\x20\x02\x00\x00" + b"\x40\x03\x00\x01\x00",  # PUBACK of 3 bytes
    b"\x20\x02\x00\x05",  # connection refused, code 5
    b"\x20\x02\x00\x00" + b"\x32\x05\x00\x09ab",  # PUBLISH whose topic runs past the packet
    b"\x20\x02\x00\x00" + b"\xd0\x01\x00",  # PINGRESP with a body
    b"",  # accept and close at once
]


def _hostile_broker(port: int, stop: threading.Event) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(8)
    server.settimeout(0.2)
    count = 0
    while not stop.is_set():
        try:
            connection, _ = server.accept()
        except TimeoutError:
            continue
        with connection:
            connection.settimeout(2)
            try:
                connection.recv(1024)
                connection.sendall(HOSTILE[count % len(HOSTILE)])
                connection.recv(1024)  # wait for the client to give up on us
            except OSError:
                pass
        count += 1
    server.close()


def _run(interpreter: str, script: str, micropython, timeout: float = 90) -> dict:
    """Run a script with the firmware on the path under `interpreter`; its last line, as JSON."""
    if interpreter == "micropython":
        output = micropython(script, timeout=timeout, heapsize="256k")
    else:
        output = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(FIRMWARE)},
            check=True,
        ).stdout
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_hostile_broker_makes_the_client_reconnect_never_crash_or_grow(micropython, interpreter):
    port = free_port()
    stop = threading.Event()
    thread = threading.Thread(target=_hostile_broker, args=(port, stop), daemon=True)
    thread.start()
    script = f"""
import asyncio, gc, json
from fp.mqtt import MQTTClient, Broker
client = MQTTClient(Broker("127.0.0.1", {port}), "victim", keepalive_s=2, max_backoff_s=0.05,
                    subscriptions=[("x", 1)])
samples = []
async def watch():
    for _ in range(3):
        target = client.errors + 9
        while client.errors < target:
            await asyncio.sleep(0.05)
        gc.collect()
        samples.append(gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0)  # MicroPython's heap
    client.stop()
async def main():
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(watch(), 60)
    await asyncio.sleep(0.2)
asyncio.run(main())
print(json.dumps({{"errors": client.errors, "samples": samples, "up": client.is_up}}))
"""
    try:
        result = _run(interpreter, script, micropython)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert result["errors"] >= 27 and not result["up"]
    first, *rest = result["samples"]
    assert max(rest) - first < 2048, f"heap grew across reconnects: {result['samples']}"


# Runs unchanged under MicroPython and CPython: the board acknowledges as it receives, the host
# agent (host_agent.bus) only what it has committed; both read past a PUBLISH too large to hold.
ACK_SCENARIO = """
import asyncio, json
from fp.mqtt import MQTTClient, Broker
PORT = %d
got = []
async def on_message(topic, payload, token):
    got.append((topic, bytes(payload), token))
receiver = MQTTClient(Broker("127.0.0.1", PORT), "receiver", on_message=on_message, clean=False,
                      subscriptions=[("t/#", 1)], manual_ack=True, max_packet_bytes=8192, max_backoff_s=0.05)
sender = MQTTClient(Broker("127.0.0.1", PORT), "sender", max_packet_bytes=8192)
async def until(predicate, what):
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.025)
    raise RuntimeError("timed out waiting for " + what)
def payloads():
    return [p for _, p, _ in got]
async def main():
    out = {}
    tasks = [asyncio.create_task(receiver.run()), asyncio.create_task(sender.run())]
    await receiver.wait_up(5)
    await sender.wait_up(5)
    await asyncio.sleep(0.2)  # the SUBACK
    for n in range(4):
        await sender.publish("t/a", b"m%%d" %% n)
    await sender.publish("t/big", b"x" * 20000)  # larger than the receiver holds
    await sender.publish("t/a", b"after")
    await until(lambda: len(got) == 5, "five messages")
    out["first"] = [p.decode() for p in payloads()]
    out["oversized"] = receiver.oversized
    tokens = {p: t for _, p, t in got}
    out["acked"] = await receiver.ack([tokens[b"m0"], tokens[b"m1"], tokens[b"after"]])
    await asyncio.sleep(0.2)
    del got[:]
    first_connection = receiver.connects
    receiver.reconnect("test")
    await until(lambda: receiver.connects > first_connection and len(got) == 2, "the redelivery")
    out["again"] = sorted(p.decode() for p in payloads())
    out["stale"] = await receiver.ack([tokens[b"m2"]])  # a token of the first connection
    out["acked_again"] = await receiver.ack([t for _, _, t in got])
    await asyncio.sleep(0.2)
    del got[:]
    second_connection = receiver.connects
    receiver.reconnect("test")
    await until(lambda: receiver.connects > second_connection, "the third connection")
    await asyncio.sleep(0.5)
    out["third"] = payloads()
    receiver.stop()
    sender.stop()
    for task in tasks:
        task.cancel()
    print(json.dumps(out))
asyncio.run(main())
"""


def _check_ack_scenario(result: dict) -> None:
    assert result["first"] == ["m0", "m1", "m2", "m3", "after"]
    assert result["oversized"] == 1
    assert result["acked"] == 3
    assert result["again"] == ["m2", "m3"], "what was not acknowledged comes again, nothing else"
    assert result["stale"] == 0, "a token of an earlier connection is not acknowledged on a later one"
    assert result["acked_again"] == 2
    assert result["third"] == [], "acknowledged (and the oversized one) never come back"


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_manual_acknowledgements_and_an_oversized_publish(micropython, mosquitto, interpreter):
    _check_ack_scenario(_run(interpreter, ACK_SCENARIO % mosquitto.port, micropython, timeout=60))
