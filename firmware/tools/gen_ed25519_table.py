"""Generate the Ed25519 fixed-base table the firmware uses for [r]B (run on the host at build time).

Layout: 16 rows k = 0..15, row k holding j * 2^(16k) * B for j = 1..8, each point in affine
Niels form (y+x, y-x, 2*d*x*y) mod p, every coordinate 32 bytes little-endian: 16*8*96 = 12,288
bytes. A scalar is split into 64 signed radix-16 digits e[i] in [-8, 8]; digit i = 4k + c uses
row k, and the four columns c are joined with 12 doublings (Horner in 16). This is a quarter of
the 48 KB a one-row-per-digit table needs, for 12 extra doublings per signature.

Usage: python firmware/tools/gen_ed25519_table.py [OUT]   (idempotent; default next to fp/ed25519.py)
"""

import hashlib
import os
import sys

P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P
BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
ROWS = 16
MULTIPLES = 8
TABLE_BYTES = ROWS * MULTIPLES * 96


def _add(p1, p2):
    (x1, y1), (x2, y2) = p1, p2
    dxy = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + dxy, P - 2, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - dxy, P - 2, P) % P
    return x3, y3


def table_bytes():
    """Return the table as bytes (affine arithmetic: slow but obviously right, and run once)."""
    out = bytearray()
    row_base = (BX, BY)
    for _ in range(ROWS):
        point = row_base
        for _j in range(MULTIPLES):
            x, y = point
            for value in ((y + x) % P, (y - x) % P, 2 * D * x * y % P):
                out += value.to_bytes(32, "little")
            point = _add(point, row_base)
        for _ in range(16):  # next row: 2^16 times this one
            row_base = _add(row_base, row_base)
    return bytes(out)


def ensure_table(path):
    """Write the table to `path` unless an identical one is already there; return the path."""
    data = table_bytes()
    try:
        with open(path, "rb") as existing:
            if hashlib.sha256(existing.read()).digest() == hashlib.sha256(data).digest():
                return path
    except OSError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fp", "ed25519_base.bin")
    print(ensure_table(os.path.normpath(sys.argv[1] if len(sys.argv) > 1 else default)))
