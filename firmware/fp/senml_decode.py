"""SenML packs in CBOR (RFC 8428 section 6) read back: the host's and the tests' (fp.messages).

A board encodes packs (fp.senml) and never decodes one, so the decoder is a module of its own that
a board never loads. The labels are RFC 8428's table 6, as fp.senml writes them.
"""

from fp import cbor, const
from fp.errors import ProtocolError

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any

_N = const(0)  # name
_U = const(1)  # unit
_V = const(2)  # numeric value
_VS = const(3)  # string value
_VB = const(4)  # boolean value
_MAX_RECORDS = const(32)
_MAX_NAME = const(32)


def decode_pack(payload: bytes) -> "list[tuple[str, str | None, Any]]":
    """Decode a SenML CBOR pack into [(name, unit, value), ...]; raise ProtocolError if it is not one."""
    pack = cbor.decode(payload)
    if not isinstance(pack, list) or not pack or len(pack) > _MAX_RECORDS:
        raise ProtocolError("malformed", "SenML pack must be an array of 1..%d records" % _MAX_RECORDS)
    out: "list[tuple[str, str | None, Any]]" = []
    for item in pack:
        if not isinstance(item, dict):
            raise ProtocolError("malformed", "SenML record must be a map")
        name = item.get(_N)
        unit = item.get(_U)
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
            raise ProtocolError("malformed", "SenML record needs a name of 1..%d characters" % _MAX_NAME)
        if unit is not None and not isinstance(unit, str):
            raise ProtocolError("malformed", "SenML unit must be text")
        values = [item[label] for label in (_V, _VS, _VB) if label in item]
        if len(values) != 1:
            raise ProtocolError("malformed", "SenML record needs exactly one of v, vs, vb")
        value = values[0]
        if _V in item and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ProtocolError("malformed", "SenML v must be a number")
        if _VS in item and not isinstance(value, str):
            raise ProtocolError("malformed", "SenML vs must be text")
        if _VB in item and not isinstance(value, bool):
            raise ProtocolError("malformed", "SenML vb must be a boolean")
        for label in item:
            if label not in (_N, _U, _V, _VS, _VB):
                raise ProtocolError("malformed", "SenML label %r is not used by this profile" % (label,))
        out.append((name, unit, value))
    return out
