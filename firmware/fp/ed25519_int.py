"""Ed25519 in big-integer arithmetic: verify, and [r]B where viper is missing (CPython, webassembly).

Field elements are Python integers kept loosely reduced modulo p = 2^255 - 19 with the identity
2^255 = 19 (mod p): `(x & M) + 19 * (x >> 255)`, far cheaper than `%` on MicroPython's big
integers. Points are in extended coordinates (X, Y, Z, T). fp.ed25519 is the interface: it loads
this module when it needs it (and, on a board, drops it again after a verify).

verify() accepts exactly what libsodium's crypto_sign_verify_detached accepts: S < L, R and the
public key not in libsodium's small-order blocklist, the public key canonical (y < p), and the
cofactorless equation encode([S]B - [h]A) == R byte for byte.
"""

from fp.ed25519 import BadSignatureError, L, _digits, _hash_mod_l, table_entry

P = 2**255 - 19

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


def _madd(X, Y, Z, T, entry, negative):
    # Add (or subtract) the affine Niels point of a table entry (fp.ed25519.table_entry).
    ypx = int.from_bytes(entry[:32], "little")
    ymx = int.from_bytes(entry[32:64], "little")
    if negative:
        ypx, ymx = ymx, ypx
    a = (Y + X) * ypx
    a = (a & _M) + 19 * (a >> 255)
    b = (Y - X) * ymx
    b = (b & _M) + 19 * (b >> 255)
    c = T * int.from_bytes(entry[64:96], "little")
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


def _base_mult(scalar):
    """Return [scalar]B in extended coordinates for 0 <= scalar < L, using the fixed-base table."""
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
                X, Y, Z, T = _madd(X, Y, Z, T, table_entry(row * 8 + d - 1), False)
            elif d < 0:
                X, Y, Z, T = _madd(X, Y, Z, T, table_entry(row * 8 - d - 1), True)
    return X, Y, Z, T


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


def base_encode(scalar):
    """Return the encoding of [scalar]B for 0 <= scalar < L."""
    X, Y, Z, _ = _base_mult(scalar)
    return _encode(X, Y, Z)


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
            X, Y, Z, T = _madd(X, Y, Z, T, table_entry(d - 1), False)
        elif d < 0:
            X, Y, Z, T = _madd(X, Y, Z, T, table_entry(-d - 1), True)
    return X, Y, Z, T
