"""The boot counter in flash (boot.cnt): each boot's number, one more than any boot ever recorded.

Read and written once per boot (fp.identity), and again only when a boot's 2**32 sequence numbers
run out: loaded for that and dropped after, as nothing else needs it between.
"""

import struct

from fp import const
from fp.storage import write_atomic

try:
    from binascii import crc32
except ImportError:  # pragma: no cover - every supported port has binascii.crc32
    from zlib import crc32

_BOOT_FILE = const("boot.cnt")
# loaded once a boot and dropped: a const() str goes with the module, a short str is a pool name
_RECORD = const("<II")  # boot, crc32


def _slot(data, index):
    record = data[8 * index : 8 * index + 8]
    if len(record) != 8:
        return -1
    boot, check = struct.unpack(_RECORD, record)
    return boot if crc32(record[:4]) & 0xFFFFFFFF == check else -1


def next_boot():
    """Persist and return this boot's number: one more than any boot ever recorded.

    Two 8-byte slots (boot, crc32), written in place alternately. A torn write damages only the
    slot being written, whose CRC then fails; the other slot still holds the previous boot, so the
    next boot moves past both and no (boot, seq) is ever reused.
    """
    try:
        with open(_BOOT_FILE, "rb") as f:
            data = f.read()
    except OSError:
        data = b""
    if len(data) != 16:  # first boot: the file is created whole, atomically
        data = bytes(16)
        write_atomic(_BOOT_FILE, data)
    first, second = _slot(data, 0), _slot(data, 1)
    boot = max(first, second) + 1
    record = struct.pack("<I", boot)
    record += struct.pack("<I", crc32(record) & 0xFFFFFFFF)
    with open(_BOOT_FILE, "r+b") as f:
        f.seek(0 if first <= second else 8)
        f.write(record)
    return boot
