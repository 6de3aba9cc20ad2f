"""Deterministic CBOR (RFC 8949 section 4.2) encoder and strict decoder, for MicroPython and CPython.

Profile (normative, see docs/protocol.md):
- integers, lengths and tags in their shortest form; definite lengths only;
- map keys sorted by the bytewise order of their encodings; no duplicate keys;
- floats as float32 when the value is exactly a float32 (the sensors and the ESP32 FPU are 32-bit,
  so readings are float32 on purpose), else float64; never float16 (this deviates from the
  "preferred serialization" of section 4.2.1 on purpose: one width per value, no half floats);
- simple values false, true, null only; integers within 64 bits; tag 18 (COSE_Sign1) only;
- map keys are integers or text strings only: no two keys of a map can then be equal as Python
  values (1 and true, 1 and 1.0, 0.0 and -0.0 are), so every decoder reads the same entries;
- text strings are well-formed UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF).
The decoder (fp.cbor_decode, behind `decode`) accepts exactly what the encoder emits and raises
CBORError for anything else.
"""

import struct

from fp import const
from fp.errors import ProtocolError

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any

# const(): no names in a board's pool (fp.cbor_decode has its own; the host reads _MAX_DEPTH)
_MAX_DEPTH = const(16)
_TAG_SIGN1 = const(18)  # COSE_Sign1 is the only tag the protocol uses
_U64 = const(0xFFFFFFFFFFFFFFFF)


class CBORError(ProtocolError):
    """Bytes that are not CBOR in this project's deterministic profile."""

    def __init__(self, detail: str):
        super().__init__("malformed", detail)


class Tag:
    """A tagged data item (for example tag 18, COSE_Sign1)."""

    def __init__(self, tag: int, value: "Any"):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and other.tag == self.tag and other.value == self.value

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


def _head(out, major, n):
    if n < 24:
        out.append((major << 5) | n)
    elif n < 0x100:
        out.append((major << 5) | 24)
        out.append(n)
    elif n < 0x10000:
        out.append((major << 5) | 25)
        out.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        out.append((major << 5) | 26)
        out.extend(struct.pack(">I", n))
    elif n <= _U64:
        out.append((major << 5) | 27)
        out.extend(struct.pack(">Q", n))
    else:
        raise CBORError("integer out of 64-bit range")


def _is_float32(value):
    try:
        return struct.unpack(">f", struct.pack(">f", value))[0] == value
    except OverflowError:  # CPython refuses to pack what does not fit; MicroPython gives inf
        return False


def _encode(out, value, depth):
    if depth > _MAX_DEPTH:
        raise CBORError("nested deeper than %d" % _MAX_DEPTH)
    # bool before int: on CPython bool is a subclass of int.
    if value is False:
        out.append(0xF4)
    elif value is True:
        out.append(0xF5)
    elif value is None:
        out.append(0xF6)
    elif isinstance(value, int):
        if value >= 0:
            _head(out, 0, value)
        else:
            _head(out, 1, -1 - value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _head(out, 2, len(value))
        out.extend(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        _head(out, 3, len(raw))
        out.extend(raw)
    elif isinstance(value, (list, tuple)):
        _head(out, 4, len(value))
        for item in value:
            _encode(out, item, depth + 1)
    elif isinstance(value, dict):
        items = []
        for key in value:
            if not isinstance(key, (int, str)) or key is True or key is False:
                raise CBORError("map key must be an integer or a string")
            encoded_key = bytearray()
            _encode(encoded_key, key, depth + 1)
            items.append((bytes(encoded_key), value[key]))
        items.sort(key=lambda item: item[0])  # by encoded key (a lambda's name is no name in the pool)
        _head(out, 5, len(items))
        previous = None
        for encoded_key, item in items:
            if encoded_key == previous:
                raise CBORError("duplicate map key")
            previous = encoded_key
            out.extend(encoded_key)
            _encode(out, item, depth + 1)
    elif isinstance(value, float):
        if value != value or _is_float32(value):
            packed = struct.pack(">f", value)
            # NaN is written as the one float32 quiet NaN so that it too is deterministic.
            out.append(0xFA)
            out.extend(packed if value == value else b"\x7f\xc0\x00\x00")
        else:
            out.append(0xFB)
            out.extend(struct.pack(">d", value))
    elif isinstance(value, Tag):
        if value.tag != _TAG_SIGN1:
            raise CBORError("tag %d is not used by the protocol" % value.tag)
        _head(out, 6, value.tag)
        _encode(out, value.value, depth + 1)
    else:
        raise CBORError("cannot encode a %s" % type(value).__name__)


def encode(value: "Any") -> bytes:
    """Return the deterministic CBOR encoding of `value` as bytes."""
    out = bytearray()
    _encode(out, value, 0)
    return bytes(out)


def decode(data: "bytes | bytearray | memoryview") -> "Any":
    """Decode one deterministic CBOR item filling all of `data`; raise CBORError otherwise.

    The decoder is fp.cbor_decode, imported on first use: a running device decodes only for a
    command, a receipt or an update, and drops it after (fp.device, fp.ota)."""
    from fp import cbor_decode

    return cbor_decode.decode(data)
