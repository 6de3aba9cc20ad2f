"""A bounded ring buffer of signed messages in flash: survives reboot and power loss.

One file of `slots` fixed-size slots (board.json queue_slots; a file of another size, from before a
change of that setting, is rewritten to the new size at start with what waits in it). A record is
written into slot (number % slots) with a header (magic, kind, length, record number, CRC-32 over
all of it), so a torn write damages only that slot and is detected by its CRC. The highest consumed
record number lives in a second file of two CRC-protected slots written alternately (as the boot
counter). Nothing is kept in RAM but two numbers: payloads are read back from flash when sent,
through one slot-sized buffer held only while records wait (a ring that stays empty, as a
connected destination's does, holds none).

Flash writes: one slot (header + message) per message buffered, only while its destination is
unreachable; the consumed pointer once per POINTER_BATCH messages drained and when the buffer
empties. When full, the oldest message is overwritten and counted in `dropped`.
"""

import os
import struct

from fp import const
from fp.runtime import unload
from fp.storage import exists

try:
    from binascii import crc32
except ImportError:  # pragma: no cover
    from zlib import crc32

_MAGIC = const(0xF5)
_HEADER = const(12)  # magic u8, kind u8, length u16, number u32, crc u32
_POINTER_BATCH = const(16)
SLOT_BYTES = 512  # a signed reading with its header fits with room to spare
KINDS = ("reading", "ack", "status")


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


class RingBuffer:
    """FIFO of (kind, payload) in flash; `peek`, then `pop` once the message is delivered."""

    def __init__(self, path, slots=128, slot_bytes=SLOT_BYTES):
        self.path = path
        self.pointer_path = path + ".ptr"
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.dropped = 0
        self.torn = 0
        self.writes = 0
        self._unsaved_pops = 0
        self._slot = None  # the one buffer every slot is read into, while records wait (_buffer)
        size = _size(path)
        if not size or size % slot_bytes:
            # a new file (a board's first boot, a new destination) or a resize: fp.ringbuf_resize,
            # loaded for that and dropped, as a running board never needs it
            from fp import ringbuf_resize

            try:
                ringbuf_resize._fill(path + ".tmp", slots, slot_bytes)
            finally:
                unload("ringbuf_resize")
            os.rename(path + ".tmp", path)
            size = slots * slot_bytes
        from fp import ringbuf_open  # the pointer and the waiting records: loaded for this, dropped

        try:
            ringbuf_open.read_state(self, size)
        finally:
            unload("ringbuf_open")
        if self.slots != slots:
            from fp import ringbuf_resize

            try:
                ringbuf_resize._resize(self, slots)
            finally:
                unload("ringbuf_resize")
        self._release()

    # --- the consumed pointer: two CRC-protected slots -----------------------------------------

    def _save_pointer(self):
        record = struct.pack("<I", self._consumed)
        record += struct.pack("<I", crc32(record) & 0xFFFFFFFF)
        if not exists(self.pointer_path):
            with open(self.pointer_path, "wb") as f:
                f.write(bytes(16))
        # alternate slots by parity, so the previous value survives a torn write
        with open(self.pointer_path, "r+b") as f:
            f.seek(8 * (self._consumed & 1))
            f.write(record)
        self._unsaved_pops = 0

    # --- records --------------------------------------------------------------------------------

    def _buffer(self):
        if self._slot is None:
            self._slot = bytearray(self.slot_bytes)
        return self._slot

    def _release(self):
        """Drop the slot buffer once nothing waits: a ring that stays empty holds none."""
        if self._first >= self._next:
            self._slot = None

    def _read_slot(self, f, index):
        f.seek(index * self.slot_bytes)
        raw = self._buffer()
        if f.readinto(raw) != self.slot_bytes or raw[0] != _MAGIC:
            return None
        view = memoryview(raw)
        magic, kind, length, number, check = struct.unpack("<BBHII", view[:_HEADER])
        if _HEADER + length > self.slot_bytes:
            return False
        body = view[_HEADER : _HEADER + length]
        if crc32(body, crc32(view[:8])) & 0xFFFFFFFF != check:
            return False  # torn: the write of this slot did not finish
        return number, kind, body

    @property
    def head(self):
        """The record number of the oldest message waiting (== end when none)."""
        return self._first

    @property
    def end(self):
        """The record number the next append takes."""
        return self._next

    def read(self, number):
        """Return (kind, payload) of waiting record `number`, or None (torn, overwritten, consumed)."""
        if not self._first <= number < self._next:
            return None
        with open(self.path, "rb") as f:
            record = self._read_slot(f, number % self.slots)
        if record and record[0] == number:
            return KINDS[record[1]], bytes(record[2])
        return None

    @property
    def pending(self):
        """How many messages wait (torn ones included until skipped)."""
        return self._next - self._first

    def append(self, kind, payload):
        """Store a message; when full, overwrite the oldest and count it as dropped."""
        if _HEADER + len(payload) > self.slot_bytes:
            raise ValueError("message of %d bytes exceeds a %d-byte slot" % (len(payload), self.slot_bytes))
        if self.pending >= self.slots:
            self._first += 1
            self._consumed = self._first - 1
            self.dropped += 1
            self._save_pointer()
        number = self._next
        head = struct.pack("<BBHI", _MAGIC, KINDS.index(kind), len(payload), number)
        record = head + struct.pack("<I", crc32(payload, crc32(head)) & 0xFFFFFFFF) + payload
        with open(self.path, "r+b") as f:
            f.seek((number % self.slots) * self.slot_bytes)
            f.write(record)
        self.writes += 1
        self._next = number + 1

    def peek(self):
        """Return the oldest (kind, payload) still waiting, or None; skips torn records."""
        with open(self.path, "rb") as f:
            while self._first < self._next:
                record = self._read_slot(f, self._first % self.slots)
                if record and record[0] == self._first:
                    return KINDS[record[1]], bytes(record[2])
                self.torn += 1 if record is False else 0
                self._first += 1  # lost to a torn write or overwritten: skip, never stop
        self._release()
        return None

    def pop(self):
        """Mark the oldest message delivered."""
        if self._first < self._next:
            self._consumed = self._first
            self._first += 1
            self._unsaved_pops += 1
            if self._unsaved_pops >= _POINTER_BATCH or self._first == self._next:
                self._save_pointer()
            self._release()
