"""SHA-512 compression in viper on 32-bit halves (MicroPython only): fp.sha512's fast function.

A module of its own because viper is machine code: the webassembly port (no viper) runs a build
of the firmware without it, and fp.sha512 falls back to plain Python there.
The compression function works on (high, low) 32-bit halves and masks after every addition and
left shift, so it is correct whether viper integers are 32-bit (ESP32) or 64-bit (unix port).
"""

# pyright: reportArgumentType=false
# (viper takes an array or bytearray where its signature says ptr32/ptr8: the call casts the
# buffer to a pointer, which the stubs' ptr32/ptr8 classes cannot express)

import micropython

# The message schedule (160 words, 640 bytes) is scratch space rewritten by every compression,
# which never yields: it lies in fp.fe25519's registers, which hold values only during point
# arithmetic, and no hash runs during that (a signature hashes before and after [r]B; a verify
# hashes before its arithmetic, which is fp.ed25519_int's big integers). The buffer is the heap's,
# so 32-bit aligned.
from fp.fe25519 import MEMORY as _W

# FIPS 180-4's constants as (high, low) 32-bit little-endian words: viper reads them in place, and
# no 64-bit integer objects are made (fp.sha512 holds those). A bytes literal, not bytes.fromhex():
# from a ROMFS image it stays in the image, not in the heap, read byte by byte (a .mpy's constants
# lie at any offset in the image, and a 32-bit load must be aligned on an ESP32).
_K32 = (
    b"\x98\x2f\x8a\x42\x22\xae\x28\xd7\x91\x44\x37\x71\xcd\x65\xef\x23\xcf\xfb\xc0\xb5\x2f\x3b\x4d\xec"
    b"\xa5\xdb\xb5\xe9\xbc\xdb\x89\x81\x5b\xc2\x56\x39\x38\xb5\x48\xf3\xf1\x11\xf1\x59\x19\xd0\x05\xb6"
    b"\xa4\x82\x3f\x92\x9b\x4f\x19\xaf\xd5\x5e\x1c\xab\x18\x81\x6d\xda\x98\xaa\x07\xd8\x42\x02\x03\xa3"
    b"\x01\x5b\x83\x12\xbe\x6f\x70\x45\xbe\x85\x31\x24\x8c\xb2\xe4\x4e\xc3\x7d\x0c\x55\xe2\xb4\xff\xd5"
    b"\x74\x5d\xbe\x72\x6f\x89\x7b\xf2\xfe\xb1\xde\x80\xb1\x96\x16\x3b\xa7\x06\xdc\x9b\x35\x12\xc7\x25"
    b"\x74\xf1\x9b\xc1\x94\x26\x69\xcf\xc1\x69\x9b\xe4\xd2\x4a\xf1\x9e\x86\x47\xbe\xef\xe3\x25\x4f\x38"
    b"\xc6\x9d\xc1\x0f\xb5\xd5\x8c\x8b\xcc\xa1\x0c\x24\x65\x9c\xac\x77\x6f\x2c\xe9\x2d\x75\x02\x2b\x59"
    b"\xaa\x84\x74\x4a\x83\xe4\xa6\x6e\xdc\xa9\xb0\x5c\xd4\xfb\x41\xbd\xda\x88\xf9\x76\xb5\x53\x11\x83"
    b"\x52\x51\x3e\x98\xab\xdf\x66\xee\x6d\xc6\x31\xa8\x10\x32\xb4\x2d\xc8\x27\x03\xb0\x3f\x21\xfb\x98"
    b"\xc7\x7f\x59\xbf\xe4\x0e\xef\xbe\xf3\x0b\xe0\xc6\xc2\x8f\xa8\x3d\x47\x91\xa7\xd5\x25\xa7\x0a\x93"
    b"\x51\x63\xca\x06\x6f\x82\x03\xe0\x67\x29\x29\x14\x70\x6e\x0e\x0a\x85\x0a\xb7\x27\xfc\x2f\xd2\x46"
    b"\x38\x21\x1b\x2e\x26\xc9\x26\x5c\xfc\x6d\x2c\x4d\xed\x2a\xc4\x5a\x13\x0d\x38\x53\xdf\xb3\x95\x9d"
    b"\x54\x73\x0a\x65\xde\x63\xaf\x8b\xbb\x0a\x6a\x76\xa8\xb2\x77\x3c\x2e\xc9\xc2\x81\xe6\xae\xed\x47"
    b"\x85\x2c\x72\x92\x3b\x35\x82\x14\xa1\xe8\xbf\xa2\x64\x03\xf1\x4c\x4b\x66\x1a\xa8\x01\x30\x42\xbc"
    b"\x70\x8b\x4b\xc2\x91\x97\xf8\xd0\xa3\x51\x6c\xc7\x30\xbe\x54\x06\x19\xe8\x92\xd1\x18\x52\xef\xd6"
    b"\x24\x06\x99\xd6\x10\xa9\x65\x55\x85\x35\x0e\xf4\x2a\x20\x71\x57\x70\xa0\x6a\x10\xb8\xd1\xbb\x32"
    b"\x16\xc1\xa4\x19\xc8\xd0\xd2\xb8\x08\x6c\x37\x1e\x53\xab\x41\x51\x4c\x77\x48\x27\x99\xeb\x8e\xdf"
    b"\xb5\xbc\xb0\x34\xa8\x48\x9b\xe1\xb3\x0c\x1c\x39\x63\x5a\xc9\xc5\x4a\xaa\xd8\x4e\xcb\x8a\x41\xe3"
    b"\x4f\xca\x9c\x5b\x73\xe3\x63\x77\xf3\x6f\x2e\x68\xa3\xb8\xb2\xd6\xee\x82\x8f\x74\xfc\xb2\xef\x5d"
    b"\x6f\x63\xa5\x78\x60\x2f\x17\x43\x14\x78\xc8\x84\x72\xab\xf0\xa1\x08\x02\xc7\x8c\xec\x39\x64\x1a"
    b"\xfa\xff\xbe\x90\x28\x1e\x63\x23\xeb\x6c\x50\xa4\xe9\xbd\x82\xde\xf7\xa3\xf9\xbe\x15\x79\xc6\xb2"
    b"\xf2\x78\x71\xc6\x2b\x53\x72\xe3\xce\x3e\x27\xca\x9c\x61\x26\xea\xc7\xb8\x86\xd1\x07\xc2\xc0\x21"
    b"\xd6\x7d\xda\xea\x1e\xeb\xe0\xcd\x7f\x4f\x7d\xf5\x78\xd1\x6e\xee\xaa\x67\xf0\x06\xba\x6f\x17\x72"
    b"\xc5\x7d\x63\x0a\xa6\x98\xc8\xa2\x04\x98\x3f\x11\xae\x0d\xf9\xbe\x35\x0b\x71\x1b\x1b\x47\x1c\x13"
    b"\xf5\x77\xdb\x28\x84\x7d\x04\x23\x7b\xab\xca\x32\x93\x24\xc7\x40\x0a\xbe\x9e\x3c\xbc\xbe\xc9\x15"
    b"\xc4\x67\x1d\x43\x4c\x0d\x10\x9c\xbe\xd4\xc5\x4c\xb6\x42\x3e\xcb\x9c\x29\x7f\x59\x2a\x7e\x65\xfc"
    b"\xab\x6f\xcb\x5f\xec\xfa\xd6\x3a\x8c\x19\x44\x6c\x17\x58\x47\x4a"
)
_IV32 = (
    b"\x67\xe6\x09\x6a\x08\xc9\xbc\xf3\x85\xae\x67\xbb\x3b\xa7\xca\x84\x72\xf3\x6e\x3c\x2b\xf8\x94\xfe"
    b"\x3a\xf5\x4f\xa5\xf1\x36\x1d\x5f\x7f\x52\x0e\x51\xd1\x82\xe6\xad\x8c\x68\x05\x9b\x1f\x6c\x3e\x2b"
    b"\xab\xd9\x83\x1f\x6b\xbd\x41\xfb\x19\xcd\xe0\x5b\x79\x21\x7e\x13"
)


@micropython.viper
def _compress_viper(st: ptr32, w: ptr32, k: ptr8, blk: ptr8):
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
        j = t * 4  # byte by byte: the constants need not be word-aligned where they lie in flash
        kh = (uint(k[j + 3]) << 24) | (uint(k[j + 2]) << 16) | (uint(k[j + 1]) << 8) | uint(k[j])
        kl = (uint(k[j + 7]) << 24) | (uint(k[j + 6]) << 16) | (uint(k[j + 5]) << 8) | uint(k[j + 4])
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


def sha512(*parts):
    """Return the SHA-512 digest (64 bytes) of the parts (bytes-like objects) one after the other.

    One function, not a class with the hashlib interface: the device hashes whole messages only
    (a seed; a prefix, the public key and a message), and every function or class a running board
    holds costs heap.
    """
    state = bytearray(_IV32)  # (high, low) 32-bit words, little-endian: the heap's, so aligned
    block = bytearray(128)
    used = 0
    length = 0
    for part in parts:
        view = memoryview(part)
        remaining = len(view)
        length += remaining
        offset = 0
        while remaining:
            take = 128 - used
            if take > remaining:
                take = remaining
            block[used : used + take] = view[offset : offset + take]
            used += take
            offset += take
            remaining -= take
            if used == 128:
                _compress_viper(state, _W, _K32, block)
                used = 0
    block[used] = 0x80
    for i in range(used + 1, 128):
        block[i] = 0
    if used >= 112:
        _compress_viper(state, _W, _K32, block)
        for i in range(128):
            block[i] = 0
    bits = length * 8
    for i in range(16):
        block[127 - i] = (bits >> (8 * i)) & 0xFF
    _compress_viper(state, _W, _K32, block)
    for i in range(64):  # the digest: each 32-bit word big-endian, over the block's first 64 bytes
        block[i] = state[i ^ 3]
    return bytes(memoryview(block)[:64])
