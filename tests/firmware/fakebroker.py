"""A broker played byte for byte on a raw loopback socket, and a runner for client scripts under
MicroPython and CPython: the conformance tests of fp.mqtt (tests/firmware/test_mqtt_conformance.py).

The broker follows a script: for each connection it accepts, a list of steps - bytes it expects the
client to send (every byte compared), bytes it sends, a stretch of silence it expects, the end of
the stream it expects (the client closed), or a close of its own. Anything else the client sends,
or a connection the script does not expect, is a failure the test reports with the bytes in hex.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from tests.helpers import FIRMWARE, REPO, micropython_binary, micropython_env

STEP_TIMEOUT_S = 10.0


def packet(first: int, *parts: bytes) -> bytes:
    """A control packet from its first byte and body parts (the test's own encoder: < 128 bytes)."""
    body = b"".join(parts)
    assert len(body) < 128
    return bytes((first, len(body))) + body


def string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def pid(number: int) -> bytes:
    return number.to_bytes(2, "big")


# steps
def expect(data: bytes, within_s: float | None = None) -> tuple:
    """The client sends exactly these bytes next (within `within_s` of the previous step's end)."""
    return ("expect", data, within_s)


def send(data: bytes) -> tuple:
    return ("send", data)


def quiet(seconds: float) -> tuple:
    """The client sends nothing for this long."""
    return ("quiet", seconds)


def eof(within_s: float = STEP_TIMEOUT_S) -> tuple:
    """The client closes the connection, sending nothing more."""
    return ("eof", within_s)


def close() -> tuple:
    return ("close",)


def sleep(seconds: float) -> tuple:
    return ("sleep", seconds)


@dataclass
class FakeBroker:
    """Plays `connections` (one list of steps per accepted connection) in a thread."""

    connections: list[list[tuple]]
    extra_wait_s: float = 0.5  # after the script: no other connection may come in this long
    failures: list[str] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)  # everything each connection got
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            for index, steps in enumerate(self.connections):
                self.server.settimeout(STEP_TIMEOUT_S * 2)
                try:
                    connection, _ = self.server.accept()
                except TimeoutError:
                    self.failures.append(f"connection {index}: the client never connected")
                    return
                with connection:
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.received.append(b"")
                    if not self._play(index, connection, steps):
                        return
            self.server.settimeout(self.extra_wait_s)
            try:
                extra, _ = self.server.accept()
                extra.close()
                self.failures.append("the client connected again after the script ended")
            except TimeoutError:
                pass
        finally:
            self.server.close()

    def _read(self, index: int, connection: socket.socket, count: int, timeout_s: float) -> bytes:
        data = b""
        deadline = time.monotonic() + timeout_s
        while len(data) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            connection.settimeout(left)
            try:
                chunk = connection.recv(count - len(data))
            except TimeoutError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                break
            data += chunk
        self.received[index] += data
        return data

    def _play(self, index: int, connection: socket.socket, steps: list[tuple]) -> bool:
        for number, step in enumerate(steps):
            where = f"connection {index} step {number} ({step[0]})"
            kind = step[0]
            started = time.monotonic()
            if kind == "expect":
                data, within_s = step[1], step[2]
                got = self._read(index, connection, len(data), within_s or STEP_TIMEOUT_S)
                if got != data:
                    self.failures.append(
                        f"{where}: expected {data.hex(' ')}, got {got.hex(' ') or 'nothing'}"
                    )
                    return False
                self.timings[f"{index}.{number}"] = time.monotonic() - started
            elif kind == "send":
                try:
                    connection.sendall(step[1])
                except OSError as error:
                    self.failures.append(f"{where}: {error}")
                    return False
            elif kind == "quiet":
                got = self._read(index, connection, 1, step[1])
                if got:
                    more = self._read(index, connection, 256, 0.2)
                    self.failures.append(f"{where}: expected silence, got {(got + more).hex(' ')}")
                    return False
            elif kind == "eof":
                connection.settimeout(step[1])
                try:
                    got = connection.recv(256)
                except TimeoutError:
                    self.failures.append(f"{where}: the client did not close within {step[1]} s")
                    return False
                except OSError:
                    got = b""
                self.received[index] += got
                if got:
                    self.failures.append(f"{where}: expected the end of the stream, got {got.hex(' ')}")
                    return False
                self.timings[f"{index}.{number}"] = time.monotonic() - started
            elif kind == "close":
                connection.shutdown(socket.SHUT_RDWR)
            elif kind == "sleep":
                time.sleep(step[1])
        return True

    def finish(self, timeout_s: float = 30) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the fake broker's script did not end"
        assert not self.failures, "\n".join(self.failures)


PRELUDE = """
import asyncio, json
from fp.mqtt import MQTTClient, Broker, MQTTError
PORT = %d
out = {}
got = []
async def on_message(message):
    got.append([message.topic, bytes(message.payload).decode(), message.qos, message.retain, message.dup])
async def until(predicate, what, seconds=10):
    for _ in range(int(seconds * 50)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("timed out waiting for " + what)
async def outcome(coroutine):
    try:
        await coroutine
        return "ok"
    except MQTTError as error:
        return error.reason
"""

EPILOGUE = """
asyncio.run(scenario())
out["got"] = got
print(json.dumps(out))
"""


def run_client(interpreter: str, port: int, body: str, timeout_s: float = 60, heapsize: str = "256k") -> dict:
    """Run a scenario (code defining `async def scenario()`) under `interpreter`; its JSON `out`.

    Fails when the interpreter printed an error of a task nobody awaited (MicroPython: "Task
    exception wasn't retrieved", CPython: "Task exception was never retrieved").
    """
    script = PRELUDE % port + body + EPILOGUE
    if interpreter == "micropython":
        command = [micropython_binary(), "-X", f"heapsize={heapsize}", "-c", script]
        env = micropython_env()
    else:
        command = [sys.executable, "-c", script]
        env = {**os.environ, "PYTHONPATH": str(FIRMWARE)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO)
    both = result.stdout + result.stderr
    assert result.returncode == 0, f"{interpreter} exited {result.returncode}:\n{both}"
    assert "Task exception" not in both, both
    return json.loads(result.stdout.strip().splitlines()[-1])
