"""The board's MQTT client (fp.mqtt) against real mosquitto and against a hostile broker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from fp.mqtt import publish_packet
from host_agent.bus.mosquitto import free_port
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


def _read_until(connection: socket.socket, marker: bytes) -> bytes:
    """What the client sends until `marker` has come, or until it closes or resets."""
    received = b""
    try:
        while marker not in received:
            chunk = connection.recv(1024)
            if not chunk:
                break
            received += chunk
    except ConnectionResetError:  # the client dropped the connection unread
        pass
    return received


def _big_publish_broker(server: socket.socket, pubacks: list[bytes]) -> None:
    """Two connections: on each, CONNACK and a 7,000-byte QoS 1 PUBLISH (the first one waits for
    the client's 'ready'); what the client sends back is kept."""
    big = publish_packet("t/big", b"x" * 7000, 1, False, 1)
    with server:
        for attempt in range(2):
            connection, _ = server.accept()
            with connection:
                connection.settimeout(20)
                connection.recv(1024)  # CONNECT
                connection.sendall(b"\x20\x02\x00\x00")
                if attempt == 0 and b"ready" not in _read_until(connection, b"ready"):
                    return
                connection.sendall(big)
                pubacks.append(_read_until(connection, b"\x40\x02\x00\x01"))


def _serve(broker, results: list[bytes]) -> tuple[int, threading.Thread]:
    """Run `broker(server, results)` in a thread on a listening loopback socket; its port and thread."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(2)
    thread = threading.Thread(target=broker, args=(server, results), daemon=True)
    thread.start()
    return server.getsockname()[1], thread


def test_a_heap_too_fragmented_for_a_packet_drops_the_connection_and_the_client_reconnects(micropython):
    """A MemoryError while reading (a board's heap full or fragmented just then) is a failed
    connection like any other: dropped, counted, logged, and connected again once memory is back;
    it never ends the client's task, which would leave the destination silent for good. Under
    MicroPython only: its heap is what the test fills (CPython has no heap limit to reach)."""
    pubacks: list[bytes] = []
    port, thread = _serve(_big_publish_broker, pubacks)
    script = f"""
import asyncio, gc, json
from fp.mqtt import MQTTClient, Broker
got, logs = [], []
async def on_message(message):
    got.append(len(message.payload))
client = MQTTClient(Broker("127.0.0.1", {port}), "short", on_message=on_message, max_backoff_s=0.05,
                    log=logs.append)
def fill():  # the heap full, then 1 KB holes: small allocations go on, a 7 KB packet cannot
    chunks, count, crumbs = [None] * 512, 0, None
    try:
        while count < 512:
            chunks[count] = bytearray(1024)
            count += 1
    except MemoryError:
        pass
    for size in (256, 64, 16):  # what is left between them, in a chain of small pieces
        try:
            while True:
                crumbs = (bytearray(size), crumbs)
        except MemoryError:
            pass
    for index in range(0, count, 4):
        chunks[index] = None
    gc.collect()
    return [chunks, crumbs]
async def main():
    task = asyncio.create_task(client.run())
    while not client.is_up:
        await asyncio.sleep(0.01)
    ballast = fill()
    await client.publish("ready", b"ready", 0)
    while client.errors == 0 and not task.done():
        await asyncio.sleep(0.01)
    ballast.clear()
    gc.collect()
    while not got and not task.done():
        await asyncio.sleep(0.01)
    client.stop()
    await asyncio.sleep(0.1)
    return task.done() and not got
dead = asyncio.run(asyncio.wait_for(main(), 30))
print(json.dumps({{"got": got, "errors": client.errors, "logs": logs, "dead": dead}}))
"""
    try:
        result = _run("micropython", script, micropython)
    finally:
        thread.join(timeout=5)
    assert not result["dead"], result
    assert result["got"] == [7000], result
    assert result["errors"] == 1 and "memory: out of memory" in " ".join(result["logs"]), result
    assert len(pubacks) == 2 and b"\x40\x02\x00\x01" in pubacks[1]  # delivered on the second connection


# Small packets, one whose remaining length takes two bytes and spans several of the board's
# 512-byte reads, one beyond the client's 4,096-byte limit (read past, acknowledged), and more
# small ones behind it, sent at once and then again in pieces of 1 to 7 bytes.
DRIBBLED = [
    (b"t/a", b"one", 1),
    (b"t/b", b"two" * 50, 2),
    (b"t/c", bytes(range(256)) * 8, 3),
    (b"t/big", b"x" * 6000, 4),
    (b"t/d", b"", 5),
    (b"t/e", b"last", 6),
]


def _dribbling_broker(server: socket.socket, acks: list[bytes]) -> None:
    stream = b"".join(publish_packet(topic, payload, 1, False, n) for topic, payload, n in DRIBBLED)
    pieces = [stream]
    offset = 0
    while offset < len(stream):
        size = 1 + (offset * 7919) % 7
        pieces.append(stream[offset : offset + size])
        offset += size
    with server:
        connection, _ = server.accept()
        with connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.settimeout(10)
            connection.recv(1024)  # CONNECT
            connection.sendall(b"\x20\x02\x00\x00")
            for index, piece in enumerate(pieces):
                connection.sendall(piece)
                if index and index % 50 == 0:
                    threading.Event().wait(0.002)  # let the client read a partial packet
            received = b""
            while received.count(b"\x40\x02") < 2 * len(DRIBBLED):
                chunk = connection.recv(1024)
                if not chunk:
                    break
                received += chunk
            acks.append(received)
            while connection.recv(1024):  # until the client closes: no error of ours on its side
                pass


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_packets_split_anywhere_across_reads_arrive_whole(micropython, interpreter):
    acks: list[bytes] = []
    port, thread = _serve(_dribbling_broker, acks)
    script = f"""
import asyncio, json
from fp.mqtt import MQTTClient, Broker
got = []
async def on_message(message):
    got.append([message.topic, bytes(message.payload).hex()])
client = MQTTClient(Broker("127.0.0.1", {port}), "split", on_message=on_message, max_packet_bytes=4096)
async def main():
    task = asyncio.create_task(client.run())
    for _ in range(400):
        if len(got) == 10:
            break
        await asyncio.sleep(0.025)
    await asyncio.sleep(0.2)
    client.stop()
    task.cancel()
asyncio.run(main())
print(json.dumps({{"got": got, "oversized": client.oversized, "errors": client.errors}}))
"""
    result = _run(interpreter, script, micropython)
    thread.join(timeout=10)
    expected = [[topic.decode(), payload.hex()] for topic, payload, _ in DRIBBLED if len(payload) < 4000]
    assert result["got"] == expected * 2
    assert result["oversized"] == 2 and result["errors"] == 0
    assert acks and acks[0] == b"".join(b"\x40\x02" + n.to_bytes(2, "big") for _, _, n in DRIBBLED) * 2


WILL_SCENARIO = """
import asyncio, json
from fp.mqtt import Broker
from fp.mqtt_subscribe import SubscribingClient
async def main():
    client = SubscribingClient(Broker("127.0.0.1", %d), %r, will=("will/%s", b"offline", 1, False), keepalive_s=30)
    task = asyncio.create_task(client.run())
    await client.wait_up(5)
    await client.publish("will/up", b"%s")
    if %r:
        client.stop()  # DISCONNECT: the broker discards the will (MQTT-3.14.4-3)
        await asyncio.sleep(0.3)
    else:
        import os, sys
        # a crash: the process ends, the socket closes without DISCONNECT, and the will goes out
        os._exit(0) if hasattr(os, "_exit") else sys.exit(0)
asyncio.run(main())
print(json.dumps({}))
"""


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_a_planned_stop_sends_no_will_and_a_crash_does(micropython, mosquitto, interpreter):
    import paho.mqtt.client as paho

    seen: list[tuple[str, bytes]] = []
    ready = threading.Event()
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2)
    watcher.on_connect = lambda c, u, f, rc, p: c.subscribe("will/#", qos=1)
    watcher.on_subscribe = lambda *args: ready.set()
    watcher.on_message = lambda c, u, m: seen.append((m.topic, bytes(m.payload)))
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.loop_start()
    try:
        assert ready.wait(5)
        for name, is_planned in (("planned", True), ("crash", False)):
            script = WILL_SCENARIO % (mosquitto.port, name, name, name, is_planned)
            if interpreter == "micropython":
                micropython(script, timeout=30)
            else:
                subprocess.run(
                    [sys.executable, "-c", script],
                    timeout=30,
                    env={**os.environ, "PYTHONPATH": str(FIRMWARE)},
                    check=True,
                )
        for _ in range(100):
            if ("will/crash", b"offline") in seen:
                break
            threading.Event().wait(0.05)
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    assert ("will/up", b"planned") in seen and ("will/up", b"crash") in seen
    assert ("will/crash", b"offline") in seen, "a connection lost without DISCONNECT publishes the will"
    assert ("will/planned", b"offline") not in seen, "a planned stop published the will"


RUNNING_SCENARIO = """
import asyncio, json
from fp.mqtt import Broker
from fp.mqtt_subscribe import SubscribingClient  # its wait_up(), at the end
async def main():
    client = SubscribingClient(Broker("127.0.0.1", %d), "running", subscriptions=[("running/a", 1)], clean=False)
    async def on_up():
        await client.publish("running/up", b"up")
    client.on_up = on_up
    task = asyncio.create_task(client.run())
    for _ in range(200):  # as a board does: no wait_up()
        if client.is_up:
            break
        await asyncio.sleep(0.025)
    client.reconnect("a test")  # one connection dropped: `errors` is counted on the instance
    for _ in range(200):
        if client.connects == 2 and client._on_up_task is None:
            break
        await asyncio.sleep(0.025)
    attributes = len(client.__dict__)
    is_on_up_task_held = client._on_up_task is not None  # on_up ended: its task is let go
    client.reconnect("again")
    while client.is_up:
        await asyncio.sleep(0.025)
    await client.wait_up(5)  # waits for the third connection: the event it made is let go then
    result = {
        "connects": client.connects,
        "errors": client.errors,
        "attributes": attributes,
        "is_on_up_task_held": is_on_up_task_held,
        "is_wait_event_held": client._up_event is not None,
    }
    client.stop()
    task.cancel()
    print(json.dumps(result))
asyncio.run(main())
"""


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_a_running_client_holds_37_attributes_and_no_finished_task(micropython, mosquitto, interpreter):
    # 37 names fit the step of MicroPython's attribute table below 47 (8 bytes a name on 32 bits)
    result = _run(interpreter, RUNNING_SCENARIO % mosquitto.port, micropython, timeout=30)
    assert result["connects"] == 3 and result["errors"] == 2
    assert result["attributes"] <= 37
    assert not result["is_on_up_task_held"] and not result["is_wait_event_held"]
