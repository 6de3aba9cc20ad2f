"""What a ring of fp.ringbuf reads back from flash when it opens: the consumed pointer, and which
records still wait (a scan of every slot, counting torn ones).

Loaded by `fp.ringbuf.RingBuffer` when it opens its file and dropped after: a board opens its
rings at boot (and for a new destination), so from .mpy it holds none of this code while it runs.
"""

import struct

from fp import const

try:
    from binascii import crc32
except ImportError:  # pragma: no cover
    from zlib import crc32

# loaded when a ring opens and dropped: a const() str goes with the module, a short str is a pool name
_POINTER = const("<II")  # record number, crc32

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from fp.ringbuf import RingBuffer


def read_state(ring: "RingBuffer", size):
    """Set `ring`'s record numbers from its pointer file and its file of `size` bytes."""
    ring._consumed = _load_pointer(ring.pointer_path)
    ring.slots = size // ring.slot_bytes  # the file's own: a board may have changed queue_slots
    highest = ring._consumed
    lowest = None
    with open(ring.path, "rb") as f:
        for index in range(ring.slots):
            record = ring._read_slot(f, index)
            if record is False:
                ring.torn += 1
            elif record:
                number = record[0]
                highest = max(highest, number)
                if number > ring._consumed and (lowest is None or number < lowest):
                    lowest = number
    ring._next = highest + 1
    ring._first = lowest if lowest is not None else ring._next


def _load_pointer(path):
    """The highest consumed record number of the two slots of the pointer file (0: none)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        data = b""
    best = 0
    for offset in (0, 8):
        record = data[offset : offset + 8]
        if len(record) == 8:
            number, check = struct.unpack(_POINTER, record)
            if crc32(record[:4]) & 0xFFFFFFFF == check and number > best:
                best = number
    return best
