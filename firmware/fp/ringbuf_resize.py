"""A ring file of fp.ringbuf made, or made again at another size (board.json queue_slots changed).

Loaded by `fp.ringbuf.RingBuffer` only when its file is missing or of another size, and dropped
after: a running board's rings are made once, so from .mpy it holds none of this code.
"""

import os

from fp import const

_STAGING = const(".new")  # a const() str goes with the module when it is dropped; a short str is a pool name

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from fp.ringbuf import RingBuffer


def _fill(path, slots, slot_bytes):
    """Write a file of `slots` empty slots at `path`."""
    empty = bytes(slot_bytes)
    with open(path, "wb") as f:
        for _ in range(slots):  # slot by slot: never the whole file in RAM
            f.write(empty)


def _resize(ring: "RingBuffer", slots):
    """Move the waiting records of `ring` into a file of `slots` slots.

    When more wait than the new size holds, the oldest go and are counted in `dropped`. A
    power cut before the rename leaves the old file whole: the next boot does it again.
    """
    keep_from = max(ring._first, ring._next - slots)
    staging = ring.path + _STAGING
    _fill(staging, slots, ring.slot_bytes)
    with open(ring.path, "rb") as old, open(staging, "r+b") as new:
        for number in range(keep_from, ring._next):
            record = ring._read_slot(old, number % ring.slots)
            if record and record[0] == number:  # torn ones stay behind, as peek would skip them
                new.seek((number % slots) * ring.slot_bytes)
                new.write(ring._buffer())
    os.rename(staging, ring.path)
    ring.slots = slots
    if keep_from > ring._first:
        ring.dropped += keep_from - ring._first
        ring._first = keep_from
        ring._consumed = keep_from - 1
        ring._save_pointer()
