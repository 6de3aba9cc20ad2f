"""SHA-512 (FIPS 180-4) for MicroPython, which has none: viper on 32-bit halves, plain Python fallback.

The viper compression function works on (high, low) 32-bit halves and masks after every addition
and left shift, so it is correct whether viper integers are 32-bit (ESP32) or 64-bit (unix port).
Where viper is unavailable (CPython, or a port built without it) the plain-Python class is used;
both are importable and tested separately.
"""

# pyright: reportArgumentType=false
# (viper takes an array or bytearray where its signature says ptr32/ptr8: the call casts the
# buffer to a pointer, which the stubs' ptr32/ptr8 classes cannot express)

import struct

_K = (
    0x428A2F98D728AE22, 0x7137449123EF65CD, 0xB5C0FBCFEC4D3B2F, 0xE9B5DBA58189DBBC,
    0x3956C25BF348B538, 0x59F111F1B605D019, 0x923F82A4AF194F9B, 0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242, 0x12835B0145706FBE, 0x243185BE4EE4B28C, 0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F, 0x80DEB1FE3B1696B1, 0x9BDC06A725C71235, 0xC19BF174CF692694,
    0xE49B69C19EF14AD2, 0xEFBE4786384F25E3, 0x0FC19DC68B8CD5B5, 0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275, 0x4A7484AA6EA6E483, 0x5CB0A9DCBD41FBD4, 0x76F988DA831153B5,
    0x983E5152EE66DFAB, 0xA831C66D2DB43210, 0xB00327C898FB213F, 0xBF597FC7BEEF0EE4,
    0xC6E00BF33DA88FC2, 0xD5A79147930AA725, 0x06CA6351E003826F, 0x142929670A0E6E70,
    0x27B70A8546D22FFC, 0x2E1B21385C26C926, 0x4D2C6DFC5AC42AED, 0x53380D139D95B3DF,
    0x650A73548BAF63DE, 0x766A0ABB3C77B2A8, 0x81C2C92E47EDAEE6, 0x92722C851482353B,
    0xA2BFE8A14CF10364, 0xA81A664BBC423001, 0xC24B8B70D0F89791, 0xC76C51A30654BE30,
    0xD192E819D6EF5218, 0xD69906245565A910, 0xF40E35855771202A, 0x106AA07032BBD1B8,
    0x19A4C116B8D2D0C8, 0x1E376C085141AB53, 0x2748774CDF8EEB99, 0x34B0BCB5E19B48A8,
    0x391C0CB3C5C95A63, 0x4ED8AA4AE3418ACB, 0x5B9CCA4F7763E373, 0x682E6FF3D6B2B8A3,
    0x748F82EE5DEFB2FC, 0x78A5636F43172F60, 0x84C87814A1F0AB72, 0x8CC702081A6439EC,
    0x90BEFFFA23631E28, 0xA4506CEBDE82BDE9, 0xBEF9A3F7B2C67915, 0xC67178F2E372532B,
    0xCA273ECEEA26619C, 0xD186B8C721C0C207, 0xEADA7DD6CDE0EB1E, 0xF57D4F7FEE6ED178,
    0x06F067AA72176FBA, 0x0A637DC5A2C898A6, 0x113F9804BEF90DAE, 0x1B710B35131C471B,
    0x28DB77F523047D84, 0x32CAAB7B40C72493, 0x3C9EBE0A15C9BEBC, 0x431D67C49C100D4C,
    0x4CC5D4BECB3E42B6, 0x597F299CFC657E2A, 0x5FCB6FAB3AD6FAEC, 0x6C44198C4A475817,
)  # fmt: skip
_IV = (
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
)  # fmt: skip
_M64 = 0xFFFFFFFFFFFFFFFF


def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


def _compress_py(state, block):
    w = list(struct.unpack(">16Q", block))
    for t in range(16, 80):
        a = w[t - 15]
        b = w[t - 2]
        s0 = _rotr(a, 1) ^ _rotr(a, 8) ^ (a >> 7)
        s1 = _rotr(b, 19) ^ _rotr(b, 61) ^ (b >> 6)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M64)
    a, b, c, d, e, f, g, h = state
    for t in range(80):
        t1 = (h + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41)) + ((e & f) ^ (~e & g)) + _K[t] + w[t]) & _M64
        t2 = ((_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))) & _M64
        h = g
        g = f
        f = e
        e = (d + t1) & _M64
        d = c
        c = b
        b = a
        a = (t1 + t2) & _M64
    for i, v in enumerate((a, b, c, d, e, f, g, h)):
        state[i] = (state[i] + v) & _M64


class SHA512Python:
    """Plain-Python SHA-512 with the hashlib interface (update, digest)."""

    def __init__(self, data=b""):
        self._state = list(_IV)
        self._buffer = b""
        self._length = 0
        if data:
            self.update(data)

    def update(self, data):
        data = bytes(data)
        self._length += len(data)
        data = self._buffer + data
        end = len(data) - len(data) % 128
        for offset in range(0, end, 128):
            _compress_py(self._state, data[offset : offset + 128])
        self._buffer = data[end:]
        return self

    def digest(self):
        state = list(self._state)
        tail = (
            self._buffer
            + b"\x80"
            + bytes((111 - len(self._buffer)) % 128)
            + (self._length * 8).to_bytes(16, "big")
        )
        for offset in range(0, len(tail), 128):
            _compress_py(state, tail[offset : offset + 128])
        return struct.pack(">8Q", *state)


try:
    from array import array

    import micropython

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
    def _compress_viper(st: ptr32, w: ptr32, k: ptr32, blk: ptr8):  # noqa: F821 - viper types
        # The mask is built at run time: a 0xFFFFFFFF literal is not a small int on 32-bit ports.
        m = (uint(0xFFFF) << 16) | uint(0xFFFF)
        i = 0
        while i < 32:
            j = i * 4
            w[i] = (
                (uint(blk[j]) << 24) | (uint(blk[j + 1]) << 16) | (uint(blk[j + 2]) << 8) | uint(blk[j + 3])
            )
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

    HAS_VIPER = True
except (ImportError, AttributeError, SyntaxError, NameError):  # CPython, or a port without viper
    HAS_VIPER = False


if HAS_VIPER:

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

    SHA512 = SHA512Viper
else:
    SHA512 = SHA512Python


def sha512(data=b""):
    """Return the SHA-512 digest (64 bytes) of `data`."""
    return SHA512(data).digest()
