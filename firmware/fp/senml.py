"""SenML packs in CBOR (RFC 8428 section 6) with the integer labels of its table 6: the device's
encoder. The decoder, the host's and the tests' (a board never reads a pack), is fp.senml_decode."""

import struct

from fp import cbor, const

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any

_N = const(0)  # name
_U = const(1)  # unit
_V = const(2)  # numeric value
_VS = const(3)  # string value
_VB = const(4)  # boolean value


def float32(value):
    """Round a float to the nearest float32, so readings encode as CBOR float32 on every port."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def record(name, unit, value):
    """Return one SenML record map for a measurement (`unit` may be None)."""
    item = {_N: name}
    if unit:
        item[_U] = unit
    if value is True or value is False:
        item[_VB] = value
    elif isinstance(value, str):
        item[_VS] = value
    elif isinstance(value, int):
        item[_V] = value
    elif isinstance(value, float):
        item[_V] = float32(value)
    else:
        raise ValueError("SenML value must be a number, bool or str")
    return item


def encode_pack(measurements: "list[tuple[str, str | None, Any]]") -> bytes:
    """Encode [(name, unit, value), ...] as a SenML CBOR pack."""
    return cbor.encode([record(name, unit, value) for name, unit, value in measurements])
