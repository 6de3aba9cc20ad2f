"""Ed25519 (RFC 8032) for MicroPython and CPython: sign with a fixed-base table, verify as libsodium.

Points are in extended coordinates (X, Y, Z, T). [r]B uses a 12 KB table generated on the host
(firmware/tools/gen_ed25519_table.py), read into one buffer on first use.

Two field arithmetics. Where MicroPython has viper (unix port, ESP32), signing ([r]B and its
encoding) runs on fp.fe25519: 16-bit limbs in one preallocated buffer that also holds the table,
so a signature allocates a few hundred bytes instead of ~466 KB of short-lived big integers.
Elsewhere (CPython, the webassembly port), and for verify, field elements are Python integers kept
loosely reduced modulo p = 2^255 - 19 with the identity 2^255 = 19 (mod p):
`(x & M) + 19 * (x >> 255)`, far cheaper than `%` on MicroPython's big integers.

verify() accepts exactly what libsodium's crypto_sign_verify_detached accepts: S < L, R and the
public key not in libsodium's small-order blocklist, the public key canonical (y < p), and the
cofactorless equation encode([S]B - [h]A) == R byte for byte.

Limitation: MicroPython gives no constant-time guarantee (big-integer arithmetic and table
indexing leak timing); a device key is revocable, not hardware-bound (see docs/security.md).
"""

from fp.sha512 import SHA512

try:
    from fp import fe25519
except (ImportError, SyntaxError):  # no viper here (CPython, the webassembly port): big integers
    fe25519 = None

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
D2 = 2 * D % P
SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_M = 2**255 - 1
# libsodium's small-order blocklist, as integers of the encoding with the sign bit cleared.
_SMALL_ORDER = (
    0,
    1,
    int.from_bytes(
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"
    ),
    int.from_bytes(
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little"
    ),
    P - 1,
    P,
    P + 1,
)
TABLE_BYTES = 16 * 8 * 96
_TABLE = None
_TABLE_PATH = None


class BadSignatureError(ValueError):
    """The signature does not verify with this key and message."""


def load_table(path=None):
    """Read the fixed-base table into one bytes object (once); return it."""
    global _TABLE
    if _TABLE is None:
        if path is None:
            path = _TABLE_PATH or (__file__.rsplit("/", 1)[0] + "/ed25519_base.bin")
        # read straight into one buffer: no growing copies; with viper, the registers' buffer
        data = fe25519.MEMORY if fe25519 else bytearray(TABLE_BYTES)
        with open(path, "rb") as f:
            size = f.readinto(memoryview(data)[:TABLE_BYTES])
            extra = f.read(1)
        if size != TABLE_BYTES or extra:
            raise ValueError(
                "Ed25519 table %s is not %d bytes: rebuild it (firstparty build)" % (path, TABLE_BYTES)
            )
        _TABLE = data
    return _TABLE


def _sqn(x, n):
    for _ in range(n):
        x = x * x
        x = (x & _M) + 19 * (x >> 255)
        x = (x & _M) + 19 * (x >> 255)
    return x


def _mul(a, b):
    x = a * b
    x = (x & _M) + 19 * (x >> 255)
    return (x & _M) + 19 * (x >> 255)


def _chain(z):
    # z^(2^250 - 1) and z^11, shared by inversion and the square root (ref10's addition chain).
    t0 = _sqn(z, 1)
    t1 = _mul(z, _sqn(t0, 2))
    t0 = _mul(t0, t1)
    t1 = _mul(t1, _sqn(t0, 1))
    t1 = _mul(_sqn(t1, 5), t1)
    t2 = _mul(_sqn(t1, 10), t1)
    t2 = _mul(_sqn(t2, 20), t2)
    t1 = _mul(_sqn(t2, 10), t1)
    t2 = _mul(_sqn(t1, 50), t1)
    t2 = _mul(_sqn(t2, 100), t2)
    t1 = _mul(_sqn(t2, 50), t1)
    return t1, t0


def _invert(z):
    t250, z11 = _chain(z)
    return _mul(_sqn(t250, 5), z11) % P  # z^(2^255 - 21) = z^(p - 2)


def _pow22523(z):
    t250, _ = _chain(z)
    return _mul(_sqn(t250, 2), z)  # z^(2^252 - 3)


def _double(X, Y, Z):
    xx = X * X
    xx = (xx & _M) + 19 * (xx >> 255)
    yy = Y * Y
    yy = (yy & _M) + 19 * (yy >> 255)
    zz = Z * Z
    zz = (zz & _M) + 19 * (zz >> 255)
    a = X + Y
    aa = a * a
    aa = (aa & _M) + 19 * (aa >> 255)
    h = yy + xx
    g = yy - xx
    e = aa - h
    f = zz + zz - g
    x = e * f
    x = (x & _M) + 19 * (x >> 255)
    y = h * g
    y = (y & _M) + 19 * (y >> 255)
    z = g * f
    z = (z & _M) + 19 * (z >> 255)
    t = e * h
    t = (t & _M) + 19 * (t >> 255)
    return (
        (x & _M) + 19 * (x >> 255),
        (y & _M) + 19 * (y >> 255),
        (z & _M) + 19 * (z >> 255),
        (t & _M) + 19 * (t >> 255),
    )


def _finish(e, h, g, f):
    x = e * f
    x = (x & _M) + 19 * (x >> 255)
    y = h * g
    y = (y & _M) + 19 * (y >> 255)
    z = g * f
    z = (z & _M) + 19 * (z >> 255)
    t = e * h
    t = (t & _M) + 19 * (t >> 255)
    return (
        (x & _M) + 19 * (x >> 255),
        (y & _M) + 19 * (y >> 255),
        (z & _M) + 19 * (z >> 255),
        (t & _M) + 19 * (t >> 255),
    )


def _madd(X, Y, Z, T, table, offset, negative):
    # Add (or subtract) the affine Niels point stored at table[offset:offset + 96].
    ypx = int.from_bytes(table[offset : offset + 32], "little")
    ymx = int.from_bytes(table[offset + 32 : offset + 64], "little")
    if negative:
        ypx, ymx = ymx, ypx
    a = (Y + X) * ypx
    a = (a & _M) + 19 * (a >> 255)
    b = (Y - X) * ymx
    b = (b & _M) + 19 * (b >> 255)
    c = T * int.from_bytes(table[offset + 64 : offset + 96], "little")
    c = (c & _M) + 19 * (c >> 255)
    d = Z + Z
    if negative:
        return _finish(a - b, a + b, d - c, d + c)
    return _finish(a - b, a + b, d + c, d - c)


def _cached(X, Y, Z, T):
    # The form of a point that _cadd adds: (Y + X, Y - X, Z, 2dT).
    return Y + X, Y - X, Z, _mul(T, D2)


def _cadd(X, Y, Z, T, cached, negative):
    ypx, ymx, z2, t2d = cached
    if negative:
        ypx, ymx = ymx, ypx
    a = (Y + X) * ypx
    a = (a & _M) + 19 * (a >> 255)
    b = (Y - X) * ymx
    b = (b & _M) + 19 * (b >> 255)
    c = T * t2d
    c = (c & _M) + 19 * (c >> 255)
    d = Z * z2
    d = (d & _M) + 19 * (d >> 255)
    d = d + d
    if negative:
        return _finish(a - b, a + b, d - c, d + c)
    return _finish(a - b, a + b, d + c, d - c)


def _digits(scalar, out):
    # Signed radix-16 digits of a scalar < 2^253, each stored as digit + 8 in the bytearray `out`.
    raw = scalar.to_bytes(32, "little")
    carry = 0
    for i in range(63):
        v = ((raw[i >> 1] >> ((i & 1) << 2)) & 15) + carry
        carry = (v + 8) >> 4
        out[i] = v - (carry << 4) + 8
    out[63] = (raw[31] >> 4) + carry + 8


def _base_mult(scalar):
    """Return [scalar]B in extended coordinates for 0 <= scalar < L, using the fixed-base table."""
    table = load_table()
    digits = bytearray(64)
    _digits(scalar, digits)
    X, Y, Z, T = 0, 1, 1, 0
    for column in (3, 2, 1, 0):
        if column != 3:
            for _ in range(4):
                X, Y, Z, T = _double(X, Y, Z)
        for row in range(16):
            d = digits[4 * row + column] - 8
            if d > 0:
                X, Y, Z, T = _madd(X, Y, Z, T, table, (row * 8 + d - 1) * 96, False)
            elif d < 0:
                X, Y, Z, T = _madd(X, Y, Z, T, table, (row * 8 - d - 1) * 96, True)
    return X, Y, Z, T


_DIGITS = bytearray(64)
if fe25519:
    _X, _Y, _Z, _T = (fe25519.reg(n) for n in range(4))
    _R = [fe25519.reg(n) for n in range(4, 16)]  # scratch registers


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


def _fast_madd(offset, negative):
    # as _madd, in registers, with the table entry at word `offset` of the buffer
    f, m = fe25519, fe25519.MEMORY
    a, b, c, d, e, h = _R[0], _R[1], _R[2], _R[3], _R[4], _R[5]
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
                _fast_madd(fe25519.entry(row * 8 + d - 1), False)
            elif d < 0:
                _fast_madd(fe25519.entry(row * 8 - d - 1), True)
    zi, x, y = _R[10], _R[0], _R[1]
    _fast_invert(zi, _Z)
    f.mul(m, x, _X, zi)
    f.mul(m, y, _Y, zi)
    f.canonical(m, x)
    f.canonical(m, y)
    m[2 * y + 31] |= (m[2 * x] & 1) << 7
    return bytes(memoryview(m)[2 * y : 2 * y + 32])


def _encode(X, Y, Z):
    zi = _invert(Z)
    x = X * zi % P
    y = Y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode_negated(encoded):
    """Return -A in extended coordinates, or None where the bytes are not a point (as libsodium)."""
    y = int.from_bytes(encoded, "little") & _M
    sign = encoded[31] >> 7
    yy = y * y % P
    u = (yy - 1) % P
    v = (D * yy + 1) % P
    v3 = _mul(_mul(v, v), v)
    x = _mul(_mul(u, v3), _pow22523(_mul(_mul(u, v3), _mul(v3, v)))) % P
    vxx = _mul(_mul(x, x), v) % P
    if vxx != u:
        if vxx != (P - u) % P:
            return None
        x = x * SQRT_M1 % P
    if (x & 1) == sign:  # the point is A with x of parity `sign`; return its negation
        x = (P - x) % P
    return x, y, 1, x * y % P


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


class SigningKey:
    """An Ed25519 private key; the expanded secret and public key are computed once."""

    def __init__(self, seed):
        self._scalar, self._prefix = _expand(bytes(seed))
        if fe25519:
            self.public = _fast_base_encode(self._scalar)
        else:
            X, Y, Z, _ = _base_mult(self._scalar)
            self.public = _encode(X, Y, Z)

    def sign(self, message):
        """Return the 64-byte signature of `message`."""
        r = _hash_mod_l(self._prefix, message)
        if fe25519:
            encoded_r = _fast_base_encode(r)
        else:
            X, Y, Z, _ = _base_mult(r)
            encoded_r = _encode(X, Y, Z)
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
    """Check an Ed25519 signature; raise BadSignatureError unless libsodium would accept it."""
    if len(public) != 32 or len(signature) != 64:
        raise BadSignatureError("key must be 32 bytes and signature 64")
    public = bytes(public)
    signature = bytes(signature)
    encoded_r = signature[:32]
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        raise BadSignatureError("S is not canonical (S >= L)")
    if (int.from_bytes(encoded_r, "little") & _M) in _SMALL_ORDER:
        raise BadSignatureError("R has small order")
    y = int.from_bytes(public, "little") & _M
    if y >= P:
        raise BadSignatureError("public key is not canonical")
    if y in _SMALL_ORDER:
        raise BadSignatureError("public key has small order")
    negated = _decode_negated(public)
    if negated is None:
        raise BadSignatureError("public key is not a curve point")
    k = _hash_mod_l(encoded_r, public, message)
    if _encode(*_double_scalar(k, negated, s)[:3]) != encoded_r:
        raise BadSignatureError("signature does not verify")


def _double_scalar(k, point, s):
    """Return [k]point + [s]B (Straus, shared doublings; B multiples from the table's first row)."""
    table = load_table()
    multiples = [_cached(*point)]  # [j]point for j = 1..8
    current = point
    for _ in range(7):
        current = _cadd(current[0], current[1], current[2], current[3], multiples[0], False)
        multiples.append(_cached(*current))
    k_digits = bytearray(64)
    s_digits = bytearray(64)
    _digits(k, k_digits)
    _digits(s, s_digits)
    X, Y, Z, T = 0, 1, 1, 0
    for i in range(63, -1, -1):
        if i != 63:
            for _ in range(4):
                X, Y, Z, T = _double(X, Y, Z)
        d = k_digits[i] - 8
        if d:
            X, Y, Z, T = _cadd(X, Y, Z, T, multiples[abs(d) - 1], d < 0)
        d = s_digits[i] - 8
        if d > 0:
            X, Y, Z, T = _madd(X, Y, Z, T, table, (d - 1) * 96, False)
        elif d < 0:
            X, Y, Z, T = _madd(X, Y, Z, T, table, (-d - 1) * 96, True)
    return X, Y, Z, T
