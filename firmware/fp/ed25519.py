"""Ed25519 (RFC 8032) for MicroPython and CPython: sign with a fixed-base table, verify as libsodium.

Points are in extended coordinates (X, Y, Z, T). [r]B uses a 12 KB table generated on the host
(firmware/tools/gen_ed25519_table.py), never in the heap: read in place from flash when the
firmware runs from a ROMFS image, else from its file, kept open, one 96-byte entry per addition.

Two field arithmetics. Where MicroPython has viper (unix port, ESP32), signing ([r]B and its
encoding) runs on fp.fe25519: 16-bit limbs in one preallocated buffer of registers, so a signature
allocates ~2 KB (SHA-512's buffers, the scalars, the identity's zeroes) instead of ~466 KB of
short-lived big integers (32-bit). Elsewhere (CPython, the webassembly port), and for verify, the
big-integer arithmetic of fp.ed25519_int runs: loaded only when needed, since code from .mpy lives
in the heap.

verify() accepts exactly what libsodium's crypto_sign_verify_detached accepts: S < L, R and the
public key not in libsodium's small-order blocklist, the public key canonical (y < p), and the
cofactorless equation encode([S]B - [h]A) == R byte for byte.

Limitation: MicroPython gives no constant-time guarantee (big-integer arithmetic and table
indexing leak timing); a device key is revocable, not hardware-bound (see docs/security.md).
"""

# pyright: reportOptionalMemberAccess=false
# (fe25519 is None only where viper is missing, and then the _fast_ functions are never called)

from fp import const, runtime

try:
    from fp.sha512v import sha512  # fp.sha512's plain-Python class never loads
except (ImportError, SyntaxError):
    from fp.sha512 import sha512

try:
    from fp import fe25519
except (ImportError, SyntaxError):  # no viper here (CPython, the webassembly port): big integers
    fe25519 = None

L = 2**252 + 27742317777372353535851937790883648493
_TABLE_BYTES = const(12288)  # 16 rows of 8 multiples, 96 bytes each
_ENTRY_BYTES = const(96)
_TABLE = None  # a memoryview of flash, else the table's file, kept open


class BadSignatureError(ValueError):
    """The signature does not verify with this key and message."""


def load_table(path=None):
    """Open the fixed-base table (once; the same object each time) and return it.

    From a ROMFS image (vfs.VfsRom: its files are memory-mapped) it is a memoryview of the flash,
    read in place; from any other file system it is the file itself, kept open, and each step
    reads the one 96-byte entry it needs (table_entry): either way the 12 KB never enter the heap.
    """
    global _TABLE
    if _TABLE is None:
        if path is None:
            path = __file__.rsplit("/", 1)[0] + "/ed25519_base.bin"
        f = open(path, "rb")
        try:
            table = memoryview(f)  # pyright: ignore[reportArgumentType] (a VfsRom file has the buffer protocol)
            size = len(table)
            f.close()  # the memoryview of a mapped file outlives it
        except TypeError:  # a file to read: an entry at a time
            table, size = f, f.seek(0, 2)
        if size != _TABLE_BYTES:
            f.close()
            raise ValueError(
                "Ed25519 table %s is not %d bytes: rebuild it (firstparty build)" % (path, _TABLE_BYTES)
            )
        _TABLE = table
    return _TABLE


def table_entry(index):
    """Return the table's entry `index` (96 bytes: ypx, ymx, 2dxy)."""
    table = load_table()
    if isinstance(table, memoryview):
        return table[_ENTRY_BYTES * index : _ENTRY_BYTES * (index + 1)]
    table.seek(_ENTRY_BYTES * index)
    return table.read(_ENTRY_BYTES)


def _digits(scalar, out):
    # Signed radix-16 digits of a scalar < 2^253, each stored as digit + 8 in the bytearray `out`.
    raw = scalar.to_bytes(32, "little")
    carry = 0
    for i in range(63):
        v = ((raw[i >> 1] >> ((i & 1) << 2)) & 15) + carry
        carry = (v + 8) >> 4
        out[i] = v - (carry << 4) + 8
    out[63] = (raw[31] >> 4) + carry + 8


_DIGITS = bytearray(64)
# fp.fe25519's registers as word offsets (16 words each): the point X, Y, Z, T in registers 0-3,
# scratch in 4-14, the table entry copied in (ypx, ymx, 2dxy) in 16-18.
_X = const(0)
_Y = const(16)
_Z = const(32)
_T = const(48)
_R0 = const(64)
_R1 = const(80)
_R2 = const(96)
_R3 = const(112)
_R4 = const(128)
_R5 = const(144)
_R6 = const(160)
_R7 = const(176)
_R8 = const(192)
_R9 = const(208)
_R10 = const(224)
_ENTRY = const(256)


def _base_encode(scalar):
    """Return the encoding of [scalar]B for 0 <= scalar < L (fp.fe25519's registers if viper)."""
    if not fe25519:
        from fp import ed25519_int

        return ed25519_int.base_encode(scalar)
    table = load_table()
    # read in place from flash, else each entry read from the file into one buffer (as table_entry)
    file = None if isinstance(table, memoryview) else table
    entry = bytearray(_ENTRY_BYTES if file else 0)
    f, m = fe25519, fe25519.MEMORY
    digits = _DIGITS
    _digits(scalar, digits)
    m[: 2 * _R0] = bytes(2 * _R0)  # the identity: X = T = 0, Y = Z = 1
    m[2 * _Y] = 1
    m[2 * _Z] = 1
    for column in range(3, -1, -1):
        if column != 3:
            for _ in range(4):  # X, Y, Z, T = [2](X, Y, Z), as fp.ed25519_int's _double
                f.sqr(m, _R0, _X, 1)  # xx
                f.sqr(m, _R1, _Y, 1)  # yy
                f.sqr(m, _R2, _Z, 1)  # zz
                f.add(m, _R3, _X, _Y)
                f.sqr(m, _R3, _R3, 1)  # aa
                f.add(m, _R4, _R1, _R0)  # h
                f.sub(m, _R5, _R1, _R0)  # g
                f.sub(m, _R3, _R3, _R4)  # e
                f.add(m, _R2, _R2, _R2)
                f.sub(m, _R2, _R2, _R5)  # f
                f.mul(m, _X, _R3, _R2)
                f.mul(m, _Y, _R4, _R5)
                f.mul(m, _Z, _R5, _R2)
                f.mul(m, _T, _R3, _R4)
        for row in range(16):
            digit = digits[4 * row + column] - 8
            if digit == 0:
                continue
            # X, Y, Z, T += the table's entry for |digit|, negated if digit < 0 (fp.ed25519_int's _madd)
            negative = digit < 0
            index = row * 8 + (-digit if negative else digit) - 1
            if file is None:
                f.load(m, _ENTRY, table, index)
            else:
                file.seek(_ENTRY_BYTES * index)
                file.readinto(entry)
                f.load(m, _ENTRY, entry, 0)
            ypx, ymx = (_ENTRY + 16, _ENTRY) if negative else (_ENTRY, _ENTRY + 16)
            f.add(m, _R0, _Y, _X)
            f.mul(m, _R0, _R0, ypx)  # a
            f.sub(m, _R1, _Y, _X)
            f.mul(m, _R1, _R1, ymx)  # b
            f.mul(m, _R2, _T, _ENTRY + 32)  # c
            f.add(m, _R3, _Z, _Z)  # d
            f.sub(m, _R4, _R0, _R1)  # e
            f.add(m, _R5, _R0, _R1)  # h
            if negative:
                f.sub(m, _R0, _R3, _R2)  # g
                f.add(m, _R1, _R3, _R2)  # f
            else:
                f.add(m, _R0, _R3, _R2)
                f.sub(m, _R1, _R3, _R2)
            f.mul(m, _X, _R4, _R1)
            f.mul(m, _Y, _R5, _R0)
            f.mul(m, _Z, _R0, _R1)
            f.mul(m, _T, _R4, _R5)
    # 1/Z = Z^(p - 2) into R10, by ref10's addition chain (as fp.ed25519_int's _chain and _invert)
    f.sqr(m, _R6, _Z, 1)
    f.sqr(m, _R7, _R6, 2)
    f.mul(m, _R7, _Z, _R7)
    f.mul(m, _R6, _R6, _R7)
    f.sqr(m, _R8, _R6, 1)
    f.mul(m, _R7, _R7, _R8)
    f.sqr(m, _R8, _R7, 5)
    f.mul(m, _R7, _R8, _R7)
    f.sqr(m, _R8, _R7, 10)
    f.mul(m, _R8, _R8, _R7)
    f.sqr(m, _R9, _R8, 20)
    f.mul(m, _R8, _R9, _R8)
    f.sqr(m, _R8, _R8, 10)
    f.mul(m, _R7, _R8, _R7)
    f.sqr(m, _R8, _R7, 50)
    f.mul(m, _R8, _R8, _R7)
    f.sqr(m, _R9, _R8, 100)
    f.mul(m, _R8, _R9, _R8)
    f.sqr(m, _R8, _R8, 50)
    f.mul(m, _R7, _R8, _R7)
    f.sqr(m, _R7, _R7, 5)
    f.mul(m, _R10, _R7, _R6)
    f.mul(m, _R0, _X, _R10)  # x
    f.mul(m, _R1, _Y, _R10)  # y
    f.canonical(m, _R0)
    f.canonical(m, _R1)
    m[2 * _R1 + 31] |= (m[2 * _R0] & 1) << 7
    return bytes(memoryview(m)[2 * _R1 : 2 * _R1 + 32])


def _hash_mod_l(*parts):
    return int.from_bytes(sha512(*parts), "little") % L


class SigningKey:
    """An Ed25519 private key; the expanded secret and public key are computed once."""

    def __init__(self, seed):
        if len(seed) != 32:
            raise ValueError("Ed25519 seed must be 32 bytes")
        digest = sha512(seed)
        a = int.from_bytes(digest[:32], "little")
        a &= (1 << 254) - 8
        a |= 1 << 254
        self._scalar = a % L
        self._prefix = digest[32:]
        self.public = _base_encode(self._scalar)

    def sign(self, message):
        """Return the 64-byte signature of `message`."""
        r = _hash_mod_l(self._prefix, message)
        encoded_r = _base_encode(r)
        k = _hash_mod_l(encoded_r, self.public, message)
        s = (r + k * self._scalar) % L
        return encoded_r + s.to_bytes(32, "little")


def verify(public, message, signature):
    """Check an Ed25519 signature; raise BadSignatureError unless libsodium would accept it.

    The arithmetic is fp.ed25519_int's; on a board (viper) it is loaded for the call and dropped
    after it: a device verifies only owner commands, and code loaded from .mpy lives in the heap.
    """
    from fp import ed25519_int

    try:
        ed25519_int.verify(public, message, signature)
    finally:
        if fe25519:
            runtime.unload("ed25519_int")
