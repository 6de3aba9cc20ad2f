"""The strict decoder of fp.cbor's deterministic profile (its docstring has the profile).

Callers use fp.cbor.decode, which imports this module on first use: a running device decodes
only for a command, a receipt or an update, so it loads the decoder for those and drops it after.
Its names stay in the board's name pool all the same (fp.inbound's docstring): hence few
functions, and argument names the board holds anyway (`item`, `index`).
"""

import struct

from fp import const
from fp.cbor import CBORError, Tag, _is_float32

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any

_MAX_DEPTH = const(16)  # fp.cbor's too: a const() has no global to import
_TAG_SIGN1 = const(18)  # the only tag the protocol uses (COSE_Sign1)


def _argument(data, index, info):
    """The argument of a head whose additional information is `info` >= 24: (value, next index)."""
    if info == 24:
        if index >= len(data):
            raise CBORError("truncated: needs %d more bytes" % (index + 1 - len(data)))
        n = data[index]
        if n < 24:
            raise CBORError("integer not in shortest form")
        return n, index + 1
    if info == 25:
        size, smallest = 2, 0x100
    elif info == 26:
        size, smallest = 4, 0x10000
    elif info == 27:
        size, smallest = 8, 0x100000000
    elif info == 31:
        raise CBORError("indefinite length is not allowed")
    else:
        raise CBORError("reserved additional information %d" % info)
    end = index + size
    if end > len(data):
        raise CBORError("truncated: needs %d more bytes" % (end - len(data)))
    n = int.from_bytes(data[index:end], "big")
    if n < smallest:
        raise CBORError("integer not in shortest form")
    return n, end


def item(data, index, depth):
    """Decode the item at `index` of the bytes `data`: (value, the index after it)."""
    if depth > _MAX_DEPTH:
        raise CBORError("nested deeper than %d" % _MAX_DEPTH)
    if index >= len(data):
        raise CBORError("truncated: needs %d more bytes" % (index + 1 - len(data)))
    initial = data[index]
    index += 1
    major = initial >> 5
    info = initial & 0x1F
    if major == 7:
        return _simple(data, index, info)
    if info < 24:
        n = info
    else:
        n, index = _argument(data, index, info)
    if major == 0:
        return n, index
    if major == 2 or major == 3:
        end = index + n
        if end > len(data):
            raise CBORError("truncated: needs %d more bytes" % (end - len(data)))
        if major == 2:
            return data[index:end], end
        try:
            text = str(data[index:end], "utf-8")
        except UnicodeError:
            raise CBORError("text string is not valid UTF-8")
        # CPython's UTF-8 decoder refuses every ill-formed sequence; MicroPython's checks only the
        # shape of each (a lead byte and its continuation bytes), so overlong forms, surrogates
        # and code points above U+10FFFF pass it: the decoder checks them itself (_is_utf8), where
        # there are fewer characters than bytes (not ASCII, the only case where it falls short)
        if len(text) != n and not _is_utf8(data, index, end):
            raise CBORError("text string is not valid UTF-8")
        return text, end
    if major == 4:
        if n > len(data) - index:
            raise CBORError("array longer than the message")
        items = []
        for _ in range(n):
            value, index = item(data, index, depth + 1)
            items.append(value)
        return items, index
    if major == 5:
        if 2 * n > len(data) - index:
            raise CBORError("map longer than the message")
        result = {}
        previous = None
        for _ in range(n):
            start = index
            key, index = item(data, index, depth + 1)
            encoded_key = data[start:index]
            if previous is not None and encoded_key <= previous:
                raise CBORError("map keys not in deterministic order or duplicated")
            previous = encoded_key
            if not isinstance(key, (int, str)) or key is True or key is False:
                raise CBORError("map key must be an integer or a string")
            result[key], index = item(data, index, depth + 1)
        return result, index
    if major == 1:
        return -1 - n, index
    if n != _TAG_SIGN1:
        raise CBORError("tag %d is not used by the protocol" % n)
    value, index = item(data, index, depth + 1)
    return Tag(n, value), index


def _is_utf8(data, index, end):
    """True when data[index:end] is well-formed UTF-8 (Unicode 15, table 3-7): a small state machine."""
    while index < end:
        byte = data[index]
        index += 1
        if byte < 0x80:
            continue
        # the range of the byte after the lead byte; the others are 80..BF
        low, high = 0x80, 0xBF
        if 0xC2 <= byte <= 0xDF:
            more = 1
        elif 0xE0 <= byte <= 0xEF:
            more = 2
            if byte == 0xE0:
                low = 0xA0  # below: overlong
            elif byte == 0xED:
                high = 0x9F  # above: surrogates D800..DFFF
        elif 0xF0 <= byte <= 0xF4:
            more = 3
            if byte == 0xF0:
                low = 0x90  # below: overlong
            elif byte == 0xF4:
                high = 0x8F  # above: beyond U+10FFFF
        else:
            return False  # a continuation byte, C0/C1 (overlong) or F5..FF
        if index + more > end or not low <= data[index] <= high:
            return False
        for following in range(index + 1, index + more):
            if data[following] & 0xC0 != 0x80:
                return False
        index += more
    return True


def _simple(data, index, info):
    if info == 20:
        return False, index
    if info == 21:
        return True, index
    if info == 22:
        return None, index
    if info == 26:
        end = index + 4
        if end > len(data):
            raise CBORError("truncated: needs %d more bytes" % (end - len(data)))
        raw = data[index:end]
        value = struct.unpack(">f", raw)[0]
        if value != value and raw != b"\x7f\xc0\x00\x00":
            raise CBORError("NaN not in its deterministic form")
        return value, end
    if info == 27:
        end = index + 8
        if end > len(data):
            raise CBORError("truncated: needs %d more bytes" % (end - len(data)))
        value = struct.unpack(">d", data[index:end])[0]
        if value != value or _is_float32(value):
            raise CBORError("float64 that fits float32 is not deterministic")
        return value, end
    if info == 25:
        raise CBORError("float16 is not used in this profile")
    if info == 31:
        raise CBORError("break outside an indefinite-length item")
    raise CBORError("simple value %d is not allowed" % info)


def decode(data: "bytes | bytearray | memoryview") -> "Any":
    """Decode one deterministic CBOR item filling all of `data`; raise CBORError otherwise."""
    if type(data) is not bytes:
        data = bytes(data)  # slices of bytes are bytes: map keys compare, strings decode
    value, index = item(data, 0, 0)
    if index != len(data):
        raise CBORError("%d trailing bytes after the item" % (len(data) - index))
    return value
