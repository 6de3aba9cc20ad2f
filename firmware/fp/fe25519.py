"""Field arithmetic modulo p = 2^255 - 19 in viper over preallocated 16-bit limbs (MicroPython only).

One bytearray, `MEMORY` (704 bytes), holds the registers: a field element is 16 little-endian
16-bit limbs (32 bytes), so a table entry and a register have the same layout, the 32-byte encoding
of a value is its register's bytes, and an operation allocates nothing: no big integer is ever
created. Its first 640 bytes are also SHA-512's message schedule (fp.sha512v): a compression
rewrites them whole and never runs in the middle of point arithmetic, so the two never meet. The
Ed25519 fixed-base table (12 KB) is never in the heap (fp.ed25519.load_table): read in place from
flash when the firmware runs from a ROMFS image, else one 96-byte entry at a time from its file;
`load` copies an entry into three registers. Every operation leaves its result "normalised": each limb
< 2^16 (the value < 2^256, reduced modulo p only by `canonical`).

Written for 32-bit words (ESP32, the i386 unix port) and correct on 64-bit ones: a limb product is
< 2^32, split into its low and high halves before it is summed, and every other value stays below
2^31, so the signed 32-bit arithmetic of viper never overflows. Registers are named by their
offset in 16-bit words (register n at 16 * n); the operations take (dest, a, b) offsets and the
destination may be an operand.

Importing this module fails where viper is missing (the webassembly port, CPython): fp.ed25519 then
uses its big-integer arithmetic.
"""

import micropython
from micropython import const

# 20 registers (fp.ed25519 uses 19; SHA-512's schedule takes 640 bytes), then 32 words of product
# scratch at word 16 * 20
_SCRATCH = const(320)
MEMORY = bytearray(2 * _SCRATCH + 64)


@micropython.viper
def load(memory, d: int, table, index: int):
    """Registers d, d + 1, d + 2 = the table's entry `index` (ypx, ymx, 2dxy: 96 bytes).

    Read byte by byte: a table in flash need not be 16-bit aligned (the ESP32 faults on that).
    """
    m = ptr16(memory)
    t = ptr8(table)
    a = 96 * index
    i = 0
    while i < 48:
        m[d + i] = t[a] | (t[a + 1] << 8)
        a += 2
        i += 1


@micropython.viper
def mul(memory, d: int, a: int, b: int):
    """Register d = a * b."""
    m = ptr16(memory)
    k = 0
    c = 0
    hi_prev = 0
    while k < 31:
        lo = 0
        hi = 0
        i = k - 15 if k > 15 else 0
        end = k if k < 15 else 15
        j = b + k - i
        i = a + i
        end = a + end
        while i <= end:
            p = m[i] * m[j]
            lo += p & 0xFFFF
            hi += (p >> 16) & 0xFFFF
            i += 1
            j -= 1
        s = c + lo + hi_prev
        m[_SCRATCH + k] = s & 0xFFFF
        c = s >> 16
        hi_prev = hi
        k += 1
    m[_SCRATCH + 31] = (c + hi_prev) & 0xFFFF
    c = 0
    i = 0
    while i < 16:
        s = c + m[_SCRATCH + i] + 38 * m[_SCRATCH + 16 + i]
        m[d + i] = s & 0xFFFF
        c = s >> 16
        i += 1
    while c:  # fold the carry out of 2^256 back in: 2^256 = 38 (mod p)
        c = c * 38
        i = 0
        while i < 16:
            s = m[d + i] + c
            m[d + i] = s & 0xFFFF
            c = s >> 16
            if c == 0:
                break
            i += 1


@micropython.viper
def sqr(memory, d: int, a: int, n: int):
    """Register d = a^(2^n), n >= 1: n squarings (the cross products once, doubled).

    The reduction mod p is mul's, written out again: a viper call per squaring would cost more
    time than the lines cost bytes."""
    m = ptr16(memory)
    while n > 0:
        k = 0
        c = 0
        hi_prev = 0
        while k < 31:
            lo = 0
            hi = 0
            i = k - 15 if k > 15 else 0
            j = k - i
            while i < j:
                p = m[a + i] * m[a + j]
                lo += p & 0xFFFF
                hi += (p >> 16) & 0xFFFF
                i += 1
                j -= 1
            lo += lo
            hi += hi
            if i == j:
                p = m[a + i] * m[a + i]
                lo += p & 0xFFFF
                hi += (p >> 16) & 0xFFFF
            s = c + lo + hi_prev
            m[_SCRATCH + k] = s & 0xFFFF
            c = s >> 16
            hi_prev = hi
            k += 1
        m[_SCRATCH + 31] = (c + hi_prev) & 0xFFFF
        c = 0
        i = 0
        while i < 16:
            s = c + m[_SCRATCH + i] + 38 * m[_SCRATCH + 16 + i]
            m[d + i] = s & 0xFFFF
            c = s >> 16
            i += 1
        while c:  # fold the carry out of 2^256 back in: 2^256 = 38 (mod p)
            c = c * 38
            i = 0
            while i < 16:
                s = m[d + i] + c
                m[d + i] = s & 0xFFFF
                c = s >> 16
                if c == 0:
                    break
                i += 1
        a = d
        n -= 1


@micropython.viper
def add(memory, d: int, a: int, b: int):
    """Register d = a + b."""
    m = ptr16(memory)
    c = 0
    i = 0
    while i < 16:
        s = c + m[a + i] + m[b + i]
        m[d + i] = s & 0xFFFF
        c = s >> 16
        i += 1
    while c:  # fold the carry out of 2^256 back in: 2^256 = 38 (mod p)
        c = c * 38
        i = 0
        while i < 16:
            s = m[d + i] + c
            m[d + i] = s & 0xFFFF
            c = s >> 16
            if c == 0:
                break
            i += 1


@micropython.viper
def sub(memory, d: int, a: int, b: int):
    """Register d = a - b, computed as a + 4p - b so that no limb goes negative."""
    m = ptr16(memory)
    # 4p = 2^257 - 76 as limbs that each exceed any normalised limb: 0x1FFB4, then 15 x 0x1FFFE
    s = 0x1FFB4 + m[a] - m[b]
    m[d] = s & 0xFFFF
    c = s >> 16
    i = 1
    while i < 16:
        s = c + 0x1FFFE + m[a + i] - m[b + i]
        m[d + i] = s & 0xFFFF
        c = s >> 16
        i += 1
    while c:  # fold the carry out of 2^256 back in: 2^256 = 38 (mod p)
        c = c * 38
        i = 0
        while i < 16:
            s = m[d + i] + c
            m[d + i] = s & 0xFFFF
            c = s >> 16
            if c == 0:
                break
            i += 1


@micropython.viper
def canonical(memory, d: int):
    """Reduce register d to its value modulo p (< p): its bytes are then the value's encoding."""
    m = ptr16(memory)
    rounds = 0
    while rounds < 2:  # a normalised value is < 2^256 = 2p + 38: at most two subtractions of p
        # t = v + 19; v >= p exactly when t has bit 255 set or carries out of 2^256
        c = 19
        i = 0
        while i < 16:
            s = m[d + i] + c
            m[_SCRATCH + i] = s & 0xFFFF
            c = s >> 16
            i += 1
        if c or (m[_SCRATCH + 15] & 0x8000):
            i = 0
            while i < 15:
                m[d + i] = m[_SCRATCH + i]
                i += 1
            m[d + 15] = m[_SCRATCH + 15] ^ 0x8000  # v - p = t - 2^255
        rounds += 1
