"""The flash ring buffer: order, reboot, overflow, torn writes; the same script under both interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import FIRMWARE, micropython_binary, micropython_env

SCRIPT = r"""
import json, os
from fp.ringbuf import RingBuffer
out = {}
r = RingBuffer("q.bin", slots=8, slot_bytes=64)
for i in range(5):
    r.append("reading", b"m%d" % i)
first = r.peek()
r.pop()
r.pop()
out["first"] = [first[0], first[1].decode()]
# power cut: the consumed pointer is saved in batches, so a reboot may send a message again
# (at least once, never lost); it never skips one
r = RingBuffer("q.bin", slots=8, slot_bytes=64)
out["after_reboot"] = [r.pending, r.peek()[1].decode()]
for i in range(5, 15):
    r.append("ack", b"m%d" % i)
out["full"] = [r.pending, r.dropped]
# tear the oldest record's payload, as a power cut in the middle of its write would
oldest = r._first % 8
with open("q.bin", "r+b") as f:
    f.seek(oldest * 64 + 12)
    f.write(b"\x00")
r = RingBuffer("q.bin", slots=8, slot_bytes=64)
drained = []
while True:
    item = r.peek()
    if item is None:
        break
    drained.append(item[1].decode())
    r.pop()
out["drained"] = drained
out["torn"] = r.torn
out["empty_after_reboot"] = RingBuffer("q.bin", slots=8, slot_bytes=64).pending
try:
    r.append("reading", bytes(60))
    out["too_big"] = "accepted"
except ValueError:
    out["too_big"] = "refused"
print(json.dumps(out))
"""

EXPECTED = {
    "first": ["reading", "m0"],
    "after_reboot": [5, "m0"],
    "full": [8, 7],
    "drained": ["m8", "m9", "m10", "m11", "m12", "m13", "m14"],
    "torn": 1,
    "empty_after_reboot": 0,
    "too_big": "refused",
}


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_ring_buffer_keeps_order_survives_reboot_drops_oldest_and_detects_torn_writes(interpreter, tmp_path):
    if interpreter == "cpython":
        command, env = [sys.executable, "-c", SCRIPT], dict(os.environ, PYTHONPATH=str(FIRMWARE))
    else:
        command, env = [micropython_binary(), "-c", SCRIPT], micropython_env()
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == EXPECTED


RESIZE_SCRIPT = r"""
import json, os
from fp.ringbuf import RingBuffer
out = {}
r = RingBuffer("q.bin", slots=8, slot_bytes=64)
for i in range(6):
    r.append("reading", b"m%d" % i)
r.pop()  # m0 delivered; the pointer is saved in batches, so it comes back (at least once)
# the board's queue_slots grew: what waits moves into the bigger file, in order, nothing dropped
r = RingBuffer("q.bin", slots=32, slot_bytes=64)
out["grown"] = [os.stat("q.bin")[6], r.pending, r.dropped]
for i in range(6, 30):
    r.append("reading", b"m%d" % i)
out["grown_full"] = [r.pending, r.dropped]
# it shrank below what waits: the oldest go, counted, the newest stay in order
r = RingBuffer("q.bin", slots=16, slot_bytes=64)
out["shrunk"] = [os.stat("q.bin")[6], r.pending, r.dropped]
drained = []
while True:
    item = r.peek()
    if item is None:
        break
    drained.append(item[1].decode())
    r.pop()
out["drained"] = drained
again = RingBuffer("q.bin", slots=16, slot_bytes=64)
out["after_reboot"] = [again.pending, again.dropped]
print(json.dumps(out))
"""

RESIZE_EXPECTED = {
    "grown": [32 * 64, 6, 0],
    "grown_full": [30, 0],
    "shrunk": [16 * 64, 16, 14],
    "drained": [f"m{i}" for i in range(14, 30)],
    "after_reboot": [0, 0],
}


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_ring_buffer_resized_by_the_board_keeps_what_waits_and_counts_what_no_longer_fits(
    interpreter, tmp_path
):
    if interpreter == "cpython":
        command, env = [sys.executable, "-c", RESIZE_SCRIPT], dict(os.environ, PYTHONPATH=str(FIRMWARE))
    else:
        command, env = [micropython_binary(), "-c", RESIZE_SCRIPT], micropython_env()
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == RESIZE_EXPECTED
