"""The board's MQTT client (fp.mqtt) against real mosquitto and against a hostile broker."""

from __future__ import annotations

import json
import socket
import threading

from host_agent.mosquitto import free_port

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


def test_hostile_broker_makes_the_client_reconnect_never_crash_or_grow(micropython):
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
        samples.append(gc.mem_alloc())
    client.stop()
async def main():
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(watch(), 60)
    await asyncio.sleep(0.2)
asyncio.run(main())
print(json.dumps({{"errors": client.errors, "samples": samples, "up": client.is_up}}))
"""
    try:
        result = json.loads(micropython(script, timeout=90, heapsize="256k").strip().splitlines()[-1])
    finally:
        stop.set()
        thread.join(timeout=5)
    assert result["errors"] >= 27 and not result["up"]
    first, *rest = result["samples"]
    assert max(rest) - first < 2048, f"heap grew across reconnects: {result['samples']}"
