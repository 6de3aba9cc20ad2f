"""Ed25519 (RFC 8032) for MicroPython and CPython: sign with a fixed-base table, verify as libsodium.

Points are in extended coordinates (X, Y, Z, T). [r]B uses a 12 KB table generated on the host
(firmware/tools/gen_ed25519_table.py): read in place from flash when the firmware runs from a ROMFS
image (no heap), else read into one buffer on first use.

Two field arithmetics. Where MicroPython has viper (unix port, ESP32), signing ([r]B and its
encoding) runs on fp.fe25519: 16-bit limbs in one preallocated buffer of registers, so a signature allocates ~11 KB (SHA-512 and the scalar) instead of ~466 KB of short-lived big
integers (32-bit). Elsewhere (CPython, the webassembly port), and for verify, the big-integer
arithmetic of fp.ed25519_int runs: loaded only when needed, since code from .mpy lives in the heap.

verify() accepts exactly what libsodium's crypto_sign_verify_detached accepts: S < L, R and the
public key not in libsodium's small-order blocklist, the public key canonical (y < p), and the
cofactorless equation encode([S]B - [h]A) == R byte for byte.

Limitation: MicroPython gives no constant-time guarantee (big-integer arithmetic and table
indexing leak timing); a device key is revocable, not hardware-bound (see docs/security.md).
"""

# pyright: reportOptionalMemberAccess=false
# (fe25519 is None only where viper is missing, and then the _fast_ functions are never called)

import sys

try:
    from fp.sha512v import SHA512Viper as SHA512  # fp.sha512's plain-Python class never loads
except (ImportError, SyntaxError):
    from fp.sha512 import SHA512

try:
    from fp import fe25519
except (ImportError, SyntaxError):  # no viper here (CPython, the webassembly port): big integers
    fe25519 = None

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
TABLE_BYTES = 16 * 8 * 96
_TABLE = None
_TABLE_PATH = None


class BadSignatureError(ValueError):
    """The signature does not verify with this key and message."""


def load_table(path=None):
    """Return the fixed-base table (once loaded, the same buffer each time).

    From a ROMFS image (vfs.VfsRom: its files are memory-mapped) the table is read in place, a
    memoryview of the flash; from any other file system it is read into one bytearray, taken
    whole while the heap is still empty (main.py loads it first).
    """
    global _TABLE
    if _TABLE is None:
        if path is None:
            path = _TABLE_PATH or (__file__.rsplit("/", 1)[0] + "/ed25519_base.bin")
        with open(path, "rb") as f:
            try:
                data = memoryview(f)  # pyright: ignore[reportArgumentType] (a VfsRom file has the buffer protocol)
                size, extra = len(data), b""
            except TypeError:  # a file to read: straight into one buffer, no growing copies
                data = bytearray(TABLE_BYTES)
                size = f.readinto(data)
                extra = f.read(1)
        if size != TABLE_BYTES or extra:
            raise ValueError(
                "Ed25519 table %s is not %d bytes: rebuild it (firstparty build)" % (path, TABLE_BYTES)
            )
        _TABLE = data
    return _TABLE


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
if fe25519:
    _X, _Y, _Z, _T = (fe25519.reg(n) for n in range(4))
    _R = [fe25519.reg(n) for n in range(4, 16)]  # scratch registers
    _ENTRY = fe25519.reg(16)  # a table entry, copied in: ypx, ymx, 2dxy in registers 16..18


def _fast_set_identity():
    memory = fe25519.MEMORY
    for register in (_X, _Y, _Z, _T):
        memory[2 * register : 2 * register + 32] = bytes(32)
    memory[2 * _Y] = 1
    memory[2 * _Z] = 1


def _fast_double():
    # as _double, in registers: X, Y, Z, T = [2](X, Y, Z)
    f, m = fe25519, fe25519.MEMORY
    xx, yy, zz, aa, h, g = _R[0], _R[1], _R[2], _R[3], _R[4], _R[5]
    f.sqr(m, xx, _X)
    f.sqr(m, yy, _Y)
    f.sqr(m, zz, _Z)
    f.add(m, aa, _X, _Y)
    f.sqr(m, aa, aa)
    f.add(m, h, yy, xx)
    f.sub(m, g, yy, xx)
    f.sub(m, aa, aa, h)  # e
    f.add(m, zz, zz, zz)
    f.sub(m, zz, zz, g)  # f
    f.mul(m, _X, aa, zz)
    f.mul(m, _Y, h, g)
    f.mul(m, _Z, g, zz)
    f.mul(m, _T, aa, h)


def _fast_madd(index, negative):
    # as _madd, in registers, with the table's entry `index`
    f, m = fe25519, fe25519.MEMORY
    a, b, c, d, e, h = _R[0], _R[1], _R[2], _R[3], _R[4], _R[5]
    offset = _ENTRY
    f.load(m, offset, _TABLE, index)
    ypx, ymx = (offset + 16, offset) if negative else (offset, offset + 16)
    f.add(m, a, _Y, _X)
    f.mul(m, a, a, ypx)
    f.sub(m, b, _Y, _X)
    f.mul(m, b, b, ymx)
    f.mul(m, c, _T, offset + 32)
    f.add(m, d, _Z, _Z)
    f.sub(m, e, a, b)
    f.add(m, h, a, b)
    if negative:
        f.sub(m, a, d, c)  # g
        f.add(m, b, d, c)  # f
    else:
        f.add(m, a, d, c)
        f.sub(m, b, d, c)
    f.mul(m, _X, e, b)
    f.mul(m, _Y, h, a)
    f.mul(m, _Z, a, b)
    f.mul(m, _T, e, h)


def _fast_invert(out, z):
    # z^(p - 2) by ref10's addition chain (as _chain and _invert)
    f, m = fe25519, fe25519.MEMORY
    t0, t1, t2, t3 = _R[6], _R[7], _R[8], _R[9]
    f.sqn(m, t0, z, 1)
    f.sqn(m, t1, t0, 2)
    f.mul(m, t1, z, t1)
    f.mul(m, t0, t0, t1)
    f.sqn(m, t2, t0, 1)
    f.mul(m, t1, t1, t2)
    f.sqn(m, t2, t1, 5)
    f.mul(m, t1, t2, t1)
    f.sqn(m, t2, t1, 10)
    f.mul(m, t2, t2, t1)
    f.sqn(m, t3, t2, 20)
    f.mul(m, t2, t3, t2)
    f.sqn(m, t2, t2, 10)
    f.mul(m, t1, t2, t1)
    f.sqn(m, t2, t1, 50)
    f.mul(m, t2, t2, t1)
    f.sqn(m, t3, t2, 100)
    f.mul(m, t2, t3, t2)
    f.sqn(m, t2, t2, 50)
    f.mul(m, t1, t2, t1)
    f.sqn(m, t1, t1, 5)
    f.mul(m, out, t1, t0)


def _fast_base_encode(scalar):
    """Return the encoding of [scalar]B for 0 <= scalar < L, in fp.fe25519's registers."""
    load_table()
    f, m = fe25519, fe25519.MEMORY
    digits = _DIGITS
    _digits(scalar, digits)
    _fast_set_identity()
    for column in range(3, -1, -1):
        if column != 3:
            for _ in range(4):
                _fast_double()
        for row in range(16):
            d = digits[4 * row + column] - 8
            if d > 0:
                _fast_madd(row * 8 + d - 1, False)
            elif d < 0:
                _fast_madd(row * 8 - d - 1, True)
    zi, x, y = _R[10], _R[0], _R[1]
    _fast_invert(zi, _Z)
    f.mul(m, x, _X, zi)
    f.mul(m, y, _Y, zi)
    f.canonical(m, x)
    f.canonical(m, y)
    m[2 * y + 31] |= (m[2 * x] & 1) << 7
    return bytes(memoryview(m)[2 * y : 2 * y + 32])


def _expand(seed):
    if len(seed) != 32:
        raise ValueError("Ed25519 seed must be 32 bytes")
    digest = SHA512(seed).digest()
    a = int.from_bytes(digest[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a % L, digest[32:]


def _hash_mod_l(*parts):
    h = SHA512()
    for part in parts:
        h.update(part)
    return int.from_bytes(h.digest(), "little") % L


def _base_encode(scalar):
    if fe25519:
        return _fast_base_encode(scalar)
    from fp import ed25519_int

    return ed25519_int.base_encode(scalar)


class SigningKey:
    """An Ed25519 private key; the expanded secret and public key are computed once."""

    def __init__(self, seed):
        self._scalar, self._prefix = _expand(bytes(seed))
        self.public = _base_encode(self._scalar)

    def sign(self, message):
        """Return the 64-byte signature of `message`."""
        r = _hash_mod_l(self._prefix, message)
        encoded_r = _base_encode(r)
        k = _hash_mod_l(encoded_r, self.public, message)
        s = (r + k * self._scalar) % L
        return encoded_r + s.to_bytes(32, "little")


def public_key(seed):
    """Return the 32-byte public key of a 32-byte seed."""
    return SigningKey(seed).public


def sign(seed, message):
    """Return the signature of `message` by the key with this seed."""
    return SigningKey(seed).sign(message)


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
            _unload_int()


def _unload_int():
    sys.modules.pop("fp.ed25519_int", None)
    package = sys.modules.get("fp")
    if package is not None and hasattr(package, "ed25519_int"):
        delattr(package, "ed25519_int")
