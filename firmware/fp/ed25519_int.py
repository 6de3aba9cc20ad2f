"""Ed25519 in big-integer arithmetic: verify, and [r]B where viper is missing (CPython, webassembly).

Field elements are Python integers kept loosely reduced modulo p = 2^255 - 19 with the identity
2^255 = 19 (mod p): `(x & M) + 19 * (x >> 255)`, far cheaper than `%` on MicroPython's big
integers. Points are tuples (X, Y, Z, T) in extended coordinates. fp.ed25519 is the interface: it
loads this module when it needs it (and, on a board, drops it again after a verify).

verify() accepts exactly what libsodium's crypto_sign_verify_detached accepts: S < L, R and the
public key not in libsodium's small-order blocklist, the public key canonical (y < p), and the
cofactorless equation encode([S]B - [h]A) == R byte for byte.

Every name a module loaded on a board holds (its functions, their arguments, its globals) stays in
MicroPython's name pool after the module is dropped, and a board verifies only for a command: so
the constants are const() (folded into the code) and the functions few, taking points as one
tuple, under names the board holds anyway where one fits (mul, sqr and add; value, other, n).
"""

from fp import const
from fp.ed25519 import BadSignatureError, L, _digits, _hash_mod_l, table_entry

_P = const(2**255 - 19)
_D = const(37095705934669439343138083508754565189542113879843219016388785533085940283555)
_D2 = const(2 * _D % _P)
_SQRT_M1 = const(19681161376707505956807079304988542015446066515923890162744021073123829784752)
_M = const(2**255 - 1)
# libsodium's small-order blocklist, as integers of the encoding with the sign bit cleared (the
# third and fourth: 26e8958f...6d53fc05 and c7176a70...92ac037a, little-endian).
_SMALL_ORDER = const(
    (
        0,
        1,
        2707385501144840649318225287225658788936804267575313519463743609750303402022,
        55188659117513257062467267217118295137698188065244968500265048394206261417927,
        _P - 1,
        _P,
        _P + 1,
    )
)


def sqr(value, n):
    """value squared n times: value^(2^n)."""
    for _ in range(n):
        value = value * value
        value = (value & _M) + 19 * (value >> 255)
        value = (value & _M) + 19 * (value >> 255)
    return value


def mul(value, other):
    value = value * other
    value = (value & _M) + 19 * (value >> 255)
    return (value & _M) + 19 * (value >> 255)


def _chain(value, n):
    """ref10's addition chain: n = 5, value^(p - 2) (the inverse, reduced); n = 2, value^(2^252 - 3)
    (for the square root). Both go through value^(2^250 - 1) and value^11."""
    t0 = sqr(value, 1)
    t1 = mul(value, sqr(t0, 2))
    t0 = mul(t0, t1)  # value^11
    t1 = mul(t1, sqr(t0, 1))
    t1 = mul(sqr(t1, 5), t1)
    t2 = mul(sqr(t1, 10), t1)
    t2 = mul(sqr(t2, 20), t2)
    t1 = mul(sqr(t2, 10), t1)
    t2 = mul(sqr(t1, 50), t1)
    t2 = mul(sqr(t2, 100), t2)
    t1 = mul(sqr(t2, 50), t1)  # value^(2^250 - 1)
    if n == 5:
        return mul(sqr(t1, 5), t0) % _P  # value^(2^255 - 21)
    return mul(sqr(t1, 2), value)


def _double(value):
    """[2]value, for a point value (X, Y, Z, T)."""
    X, Y, Z, _ = value
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
    return mul(e, f), mul(h, g), mul(g, f), mul(e, h)


def add(value, other, n):
    """value + other, or value - other if n < 0, for a point value (X, Y, Z, T). `other` is a table
    entry (fp.ed25519.table_entry: Y + X, Y - X and 2dT of an affine point, 32 bytes each) or a
    point in the form _cached gives it."""
    X, Y, Z, T = value
    if type(other) is tuple:
        ypx, ymx, z2, t2d = other
    else:
        ypx = int.from_bytes(other[:32], "little")
        ymx = int.from_bytes(other[32:64], "little")
        t2d = int.from_bytes(other[64:96], "little")
        z2 = None  # affine: Z2 = 1
    if n < 0:
        ypx, ymx = ymx, ypx
    a = mul(Y + X, ypx)
    b = mul(Y - X, ymx)
    c = mul(T, t2d)
    d = Z + Z if z2 is None else 2 * mul(Z, z2)
    e, h = a - b, a + b
    if n < 0:
        g, f = d - c, d + c
    else:
        g, f = d + c, d - c
    return mul(e, f), mul(h, g), mul(g, f), mul(e, h)


def _cached(value):
    """The form of a point that add adds: (Y + X, Y - X, Z, 2dT)."""
    X, Y, Z, T = value
    return Y + X, Y - X, Z, mul(T, _D2)


def _encode(value):
    """The 32-byte encoding of a point value (X, Y, Z, T)."""
    X, Y, Z, _ = value
    zi = _chain(Z, 5)
    x = X * zi % _P
    y = Y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode_negated(data):
    """Return -A in extended coordinates, or None where the bytes are not a point (as libsodium)."""
    y = int.from_bytes(data, "little") & _M
    sign = data[31] >> 7
    yy = y * y % _P
    u = (yy - 1) % _P
    v = (_D * yy + 1) % _P
    v3 = mul(mul(v, v), v)
    x = mul(mul(u, v3), _chain(mul(mul(u, v3), mul(v3, v)), 2)) % _P
    vxx = mul(mul(x, x), v) % _P
    if vxx != u:
        if vxx != (_P - u) % _P:
            return None
        x = x * _SQRT_M1 % _P
    if (x & 1) == sign:  # the point is A with x of parity `sign`; return its negation
        x = (_P - x) % _P
    return x, y, 1, x * y % _P


def base_encode(scalar):
    """Return the encoding of [scalar]B for 0 <= scalar < L, using the fixed-base table."""
    digits = bytearray(64)
    _digits(scalar, digits)
    point = 0, 1, 1, 0
    for column in (3, 2, 1, 0):
        if column != 3:
            for _ in range(4):
                point = _double(point)
        for row in range(16):
            d = digits[4 * row + column] - 8
            if d:
                point = add(point, table_entry(row * 8 + abs(d) - 1), d)
    return _encode(point)


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
    if y >= _P:
        raise BadSignatureError("public key is not canonical")
    if y in _SMALL_ORDER:
        raise BadSignatureError("public key has small order")
    negated = _decode_negated(public)
    if negated is None:
        raise BadSignatureError("public key is not a curve point")
    k = _hash_mod_l(encoded_r, public, message)
    # [k](-A) + [s]B by Straus (shared doublings; B's multiples from the table's first row)
    multiples = [_cached(negated)]  # [j](-A) for j = 1..8
    current = negated
    for _ in range(7):
        current = add(current, multiples[0], 1)
        multiples.append(_cached(current))
    k_digits = bytearray(64)
    s_digits = bytearray(64)
    _digits(k, k_digits)
    _digits(s, s_digits)
    point = 0, 1, 1, 0
    for i in range(63, -1, -1):
        if i != 63:
            for _ in range(4):
                point = _double(point)
        d = k_digits[i] - 8
        if d:
            point = add(point, multiples[abs(d) - 1], d)
        d = s_digits[i] - 8
        if d:
            point = add(point, table_entry(abs(d) - 1), d)
    if _encode(point) != encoded_r:
        raise BadSignatureError("signature does not verify")
