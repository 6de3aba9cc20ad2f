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

# FIPS 180-4's constants as (high, low) 32-bit words in the machine's (little-endian) order: viper
# reads them in place, and no 64-bit integer objects are made (fp.sha512 holds those)
_K32 = bytes.fromhex(
    "982f8a4222ae28d791443771cd65ef23cffbc0b52f3b4deca5dbb5e9bcdb89815bc2563938b548f3f111f15919d005b6"
    "a4823f929b4f19afd55e1cab18816dda98aa07d8420203a3015b8312be6f7045be8531248cb2e44ec37d0c55e2b4ffd5"
    "745dbe726f897bf2feb1de80b196163ba706dc9b3512c72574f19bc1942669cfc1699be4d24af19e8647beefe3254f38"
    "c69dc10fb5d58c8bcca10c24659cac776f2ce92d75022b59aa84744a83e4a66edca9b05cd4fb41bdda88f976b5531183"
    "52513e98abdf66ee6dc631a81032b42dc82703b03f21fb98c77f59bfe40eefbef30be0c6c28fa83d4791a7d525a70a93"
    "5163ca066f8203e067292914706e0e0a850ab727fc2fd24638211b2e26c9265cfc6d2c4ded2ac45a130d3853dfb3959d"
    "54730a65de63af8bbb0a6a76a8b2773c2ec9c281e6aeed47852c72923b358214a1e8bfa26403f14c4b661aa8013042bc"
    "708b4bc29197f8d0a3516cc730be540619e892d11852efd6240699d610a9655585350ef42a20715770a06a10b8d1bb32"
    "16c1a419c8d0d2b8086c371e53ab41514c77482799eb8edfb5bcb034a8489be1b30c1c39635ac9c54aaad84ecb8a41e3"
    "4fca9c5b73e36377f36f2e68a3b8b2d6ee828f74fcb2ef5d6f63a578602f17431478c88472abf0a10802c78cec39641a"
    "faffbe90281e6323eb6c50a4e9bd82def7a3f9be1579c6b2f27871c62b5372e3ce3e27ca9c6126eac7b886d107c2c021"
    "d67ddaea1eebe0cd7f4f7df578d16eeeaa67f006ba6f1772c57d630aa698c8a204983f11ae0df9be350b711b1b471c13"
    "f577db28847d04237babca329324c7400abe9e3cbcbec915c4671d434c0d109cbed4c54cb6423ecb9c297f592a7e65fc"
    "ab6fcb5fecfad63a8c19446c1758474a"
)
_IV32 = bytes.fromhex(
    "67e6096a08c9bcf385ae67bb3ba7ca8472f36e3c2bf894fe3af54fa5f1361d5f7f520e51d182e6ad8c68059b1f6c3e2b"
    "abd9831f6bbd41fb19cde05b79217e13"
)
# The message schedule is scratch space, shared by every hash: compression never yields.
_W = array("I", bytes(640))


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
