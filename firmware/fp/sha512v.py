"""SHA-512 compression in viper on 32-bit halves (MicroPython only): fp.sha512's fast class.

A module of its own because viper is machine code: the webassembly port (no viper) runs a build
of the firmware without it, and fp.sha512 falls back to plain Python there.
The compression function works on (high, low) 32-bit halves and masks after every addition and
left shift, so it is correct whether viper integers are 32-bit (ESP32) or 64-bit (unix port).
"""

# pyright: reportArgumentType=false
# (viper takes an array or bytearray where its signature says ptr32/ptr8: the call casts the
# buffer to a pointer, which the stubs' ptr32/ptr8 classes cannot express)

from array import array

import micropython

from fp.sha512 import _IV, _K

_K32 = array("I", [0] * 160)
for _i in range(80):
    _K32[2 * _i] = _K[_i] >> 32
    _K32[2 * _i + 1] = _K[_i] & 0xFFFFFFFF
_IV32 = array("I", [0] * 16)
for _i in range(8):
    _IV32[2 * _i] = _IV[_i] >> 32
    _IV32[2 * _i + 1] = _IV[_i] & 0xFFFFFFFF
del _i
# The message schedule is scratch space, shared by every hash: compression never yields.
_W = array("I", _K32)


@micropython.viper
def _compress_viper(st: ptr32, w: ptr32, k: ptr32, blk: ptr8):
    # The mask is built at run time: a 0xFFFFFFFF literal is not a small int on 32-bit ports.
    m = (uint(0xFFFF) << 16) | uint(0xFFFF)
    i = 0
    while i < 32:
        j = i * 4
        w[i] = (uint(blk[j]) << 24) | (uint(blk[j + 1]) << 16) | (uint(blk[j + 2]) << 8) | uint(blk[j + 3])
        i += 1
    t = 32
    while t < 160:
        xh = uint(w[t - 30]) & m
        xl = uint(w[t - 29]) & m
        s0h = (((xh >> 1) | (xl << 31)) ^ ((xh >> 8) | (xl << 24)) ^ (xh >> 7)) & m
        s0l = (((xl >> 1) | (xh << 31)) ^ ((xl >> 8) | (xh << 24)) ^ ((xl >> 7) | (xh << 25))) & m
        xh = uint(w[t - 4]) & m
        xl = uint(w[t - 3]) & m
        s1h = (((xh >> 19) | (xl << 13)) ^ ((xl >> 29) | (xh << 3)) ^ (xh >> 6)) & m
        s1l = (((xl >> 19) | (xh << 13)) ^ ((xh >> 29) | (xl << 3)) ^ ((xl >> 6) | (xh << 26))) & m
        yh = uint(w[t - 32]) & m
        yl = uint(w[t - 31]) & m
        s = (yl + s0l) & m
        c = (((yl & s0l) | ((yl | s0l) & ~s)) >> 31) & 1
        yh = (yh + s0h + c) & m
        yl = s
        zh = uint(w[t - 14]) & m
        zl = uint(w[t - 13]) & m
        s = (yl + zl) & m
        c = (((yl & zl) | ((yl | zl) & ~s)) >> 31) & 1
        yh = (yh + zh + c) & m
        yl = s
        s = (yl + s1l) & m
        c = (((yl & s1l) | ((yl | s1l) & ~s)) >> 31) & 1
        yh = (yh + s1h + c) & m
        yl = s
        w[t] = yh
        w[t + 1] = yl
        t += 2
    ah = uint(st[0]) & m
    al = uint(st[1]) & m
    bh = uint(st[2]) & m
    bl = uint(st[3]) & m
    cch = uint(st[4]) & m
    ccl = uint(st[5]) & m
    dh = uint(st[6]) & m
    dl = uint(st[7]) & m
    eh = uint(st[8]) & m
    el = uint(st[9]) & m
    fh = uint(st[10]) & m
    fl = uint(st[11]) & m
    gh = uint(st[12]) & m
    gl = uint(st[13]) & m
    hh = uint(st[14]) & m
    hl = uint(st[15]) & m
    t = 0
    while t < 160:
        th = (((eh >> 14) | (el << 18)) ^ ((eh >> 18) | (el << 14)) ^ ((el >> 9) | (eh << 23))) & m
        tl = (((el >> 14) | (eh << 18)) ^ ((el >> 18) | (eh << 14)) ^ ((eh >> 9) | (el << 23))) & m
        s = (tl + hl) & m
        c = (((tl & hl) | ((tl | hl) & ~s)) >> 31) & 1
        th = (th + hh + c) & m
        tl = s
        ch = ((eh & fh) ^ (~eh & gh)) & m
        cl = ((el & fl) ^ (~el & gl)) & m
        s = (tl + cl) & m
        c = (((tl & cl) | ((tl | cl) & ~s)) >> 31) & 1
        th = (th + ch + c) & m
        tl = s
        kh = uint(k[t]) & m
        kl = uint(k[t + 1]) & m
        s = (tl + kl) & m
        c = (((tl & kl) | ((tl | kl) & ~s)) >> 31) & 1
        th = (th + kh + c) & m
        tl = s
        kh = uint(w[t]) & m
        kl = uint(w[t + 1]) & m
        s = (tl + kl) & m
        c = (((tl & kl) | ((tl | kl) & ~s)) >> 31) & 1
        th = (th + kh + c) & m
        tl = s
        uh = (((ah >> 28) | (al << 4)) ^ ((al >> 2) | (ah << 30)) ^ ((al >> 7) | (ah << 25))) & m
        ul = (((al >> 28) | (ah << 4)) ^ ((ah >> 2) | (al << 30)) ^ ((ah >> 7) | (al << 25))) & m
        vh = (ah & bh) ^ (ah & cch) ^ (bh & cch)
        vl = (al & bl) ^ (al & ccl) ^ (bl & ccl)
        s = (ul + vl) & m
        c = (((ul & vl) | ((ul | vl) & ~s)) >> 31) & 1
        uh = (uh + vh + c) & m
        ul = s
        hh = gh
        hl = gl
        gh = fh
        gl = fl
        fh = eh
        fl = el
        s = (dl + tl) & m
        c = (((dl & tl) | ((dl | tl) & ~s)) >> 31) & 1
        eh = (dh + th + c) & m
        el = s
        dh = cch
        dl = ccl
        cch = bh
        ccl = bl
        bh = ah
        bl = al
        s = (tl + ul) & m
        c = (((tl & ul) | ((tl | ul) & ~s)) >> 31) & 1
        ah = (th + uh + c) & m
        al = s
        t += 2
    s = ((uint(st[1]) & m) + al) & m
    c = ((((uint(st[1]) & m) & al) | (((uint(st[1]) & m) | al) & ~s)) >> 31) & 1
    xh = ((uint(st[0]) & m) + ah + c) & m
    xl = s
    st[0] = xh
    st[1] = xl
    s = ((uint(st[3]) & m) + bl) & m
    c = ((((uint(st[3]) & m) & bl) | (((uint(st[3]) & m) | bl) & ~s)) >> 31) & 1
    xh = ((uint(st[2]) & m) + bh + c) & m
    xl = s
    st[2] = xh
    st[3] = xl
    s = ((uint(st[5]) & m) + ccl) & m
    c = ((((uint(st[5]) & m) & ccl) | (((uint(st[5]) & m) | ccl) & ~s)) >> 31) & 1
    xh = ((uint(st[4]) & m) + cch + c) & m
    xl = s
    st[4] = xh
    st[5] = xl
    s = ((uint(st[7]) & m) + dl) & m
    c = ((((uint(st[7]) & m) & dl) | (((uint(st[7]) & m) | dl) & ~s)) >> 31) & 1
    xh = ((uint(st[6]) & m) + dh + c) & m
    xl = s
    st[6] = xh
    st[7] = xl
    s = ((uint(st[9]) & m) + el) & m
    c = ((((uint(st[9]) & m) & el) | (((uint(st[9]) & m) | el) & ~s)) >> 31) & 1
    xh = ((uint(st[8]) & m) + eh + c) & m
    xl = s
    st[8] = xh
    st[9] = xl
    s = ((uint(st[11]) & m) + fl) & m
    c = ((((uint(st[11]) & m) & fl) | (((uint(st[11]) & m) | fl) & ~s)) >> 31) & 1
    xh = ((uint(st[10]) & m) + fh + c) & m
    xl = s
    st[10] = xh
    st[11] = xl
    s = ((uint(st[13]) & m) + gl) & m
    c = ((((uint(st[13]) & m) & gl) | (((uint(st[13]) & m) | gl) & ~s)) >> 31) & 1
    xh = ((uint(st[12]) & m) + gh + c) & m
    xl = s
    st[12] = xh
    st[13] = xl
    s = ((uint(st[15]) & m) + hl) & m
    c = ((((uint(st[15]) & m) & hl) | (((uint(st[15]) & m) | hl) & ~s)) >> 31) & 1
    xh = ((uint(st[14]) & m) + hh + c) & m
    xl = s
    st[14] = xh
    st[15] = xl


class SHA512Viper:
    """SHA-512 with the hashlib interface, compression in viper; one buffer set per object."""

    def __init__(self, data=b""):
        self._state = array("I", _IV32)
        self._block = bytearray(128)
        self._used = 0
        self._length = 0
        if data:
            self.update(data)

    def update(self, data):
        view = memoryview(data)
        self._length += len(view)
        block = self._block
        used = self._used
        offset = 0
        remaining = len(view)
        while remaining:
            take = 128 - used
            if take > remaining:
                take = remaining
            block[used : used + take] = view[offset : offset + take]
            used += take
            offset += take
            remaining -= take
            if used == 128:
                _compress_viper(self._state, _W, _K32, block)
                used = 0
        self._used = used
        return self

    def digest(self):
        state = array("I", self._state)
        block = bytearray(self._block)
        used = self._used
        block[used] = 0x80
        for i in range(used + 1, 128):
            block[i] = 0
        if used >= 112:
            _compress_viper(state, _W, _K32, block)
            for i in range(128):
                block[i] = 0
        bits = self._length * 8
        for i in range(16):
            block[127 - i] = (bits >> (8 * i)) & 0xFF
        _compress_viper(state, _W, _K32, block)
        out = bytearray(64)
        for i in range(16):
            word = state[i]
            out[4 * i] = word >> 24
            out[4 * i + 1] = (word >> 16) & 0xFF
            out[4 * i + 2] = (word >> 8) & 0xFF
            out[4 * i + 3] = word & 0xFF
        return bytes(out)
