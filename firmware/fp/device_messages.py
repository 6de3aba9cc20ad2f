"""The messages a running device signs (readings, status, acks; its card: fp.device_card) and reads back.

What every board holds from boot: the device's encoders, the protocol's claim keys and content
types of those kinds, and `counter_of`, which reads the counters of the device's own queued
messages. What a device parses (commands, receipts) is in fp.inbound, loaded for one command and
dropped after (fp.device); fp.messages holds the rest of the protocol (the host's parsers, the
owner's and the agent's encoders) and re-exports both. See docs/protocol.md.
"""

from fp import cbor, const, cose_sign, senml
from fp.errors import ProtocolError

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any, Callable

    Sign = Callable[[bytes], bytes]  # Ed25519: the 64-byte signature of the bytes given

CT_READING = 112  # application/senml+cbor
CT_ACK = 65202
CT_CARD = 65203
CT_STATUS = 65204

# CWT claim keys (RFC 8392)
ISS = 1
SUB = 2
AUD = 3
EXP = 4
IAT = 6
CTI = 7
CNF = 8
U32 = 0xFFFFFFFF


def counter_id(boot: int, seq: int) -> bytes:
    """Return the cti of a device message: boot then seq, each 4 bytes big-endian."""
    if not (0 <= boot <= U32 and 0 <= seq <= U32):
        raise ValueError("boot and seq must fit 32 bits")
    return boot.to_bytes(4, "big") + seq.to_bytes(4, "big")


def _device_header(content_type, device_id, boot, seq, time_s):
    claims = {SUB: device_id, CTI: counter_id(boot, seq)}
    if time_s is not None:
        claims[IAT] = int(time_s)
    return {
        cose_sign.H_ALG: cose_sign.ALG_EDDSA,
        cose_sign.H_CONTENT_TYPE: content_type,
        cose_sign.H_CWT_CLAIMS: claims,
    }


def encode_reading(
    sign: "Sign",
    device_id: str,
    boot: int,
    seq: int,
    measurements: "list[tuple[str, str | None, Any]]",
    time_s: "float | None" = None,
) -> bytes:
    """Sign a reading: [(name, unit, value), ...] as a SenML pack."""
    header = _device_header(CT_READING, device_id, boot, seq, time_s)
    return cose_sign.sign1(sign, header, senml.encode_pack(measurements))


def encode_status(sign, device_id, boot, seq, state, info, time_s=None):
    """Sign a status message; `state` is "online" or "offline", `info` a map of counters."""
    body = dict(info)
    body["state"] = state
    return cose_sign.sign1(sign, _device_header(CT_STATUS, device_id, boot, seq, time_s), cbor.encode(body))


def encode_ack(
    sign, device_id, boot, seq, command_digest, counter, outcome, detail="", result=None, time_s=None
):
    """Sign an acknowledgement binding the SHA-256 of the command it answers and its outcome."""
    body = {"cmd": command_digest, "n": counter, "outcome": outcome, "detail": detail, "result": result}
    return cose_sign.sign1(sign, _device_header(CT_ACK, device_id, boot, seq, time_s), cbor.encode(body))


def counter_of(data: "bytes | bytearray | memoryview") -> "tuple[int, int]":
    """Return (boot, seq) of a device message from its cti, without decoding the rest.

    The device reads back the counters of messages it signed itself (its flash queue keeps bytes
    only). In deterministic CBOR the cti claim (7) is the last entry of the claims map (15), the
    last entry of the protected header, so its 8 bytes end the protected bstr: no decode, no
    allocation but the two slices. Raise ProtocolError('malformed') for anything else.
    """
    if len(data) < 16 or data[0] != 0xD2 or data[1] != 0x84:
        raise ProtocolError("malformed", "not a COSE_Sign1 array")
    head = data[2]
    if 0x40 <= head < 0x58:
        start, length = 3, head - 0x40
    elif head == 0x58:
        start, length = 4, data[3]
    else:
        raise ProtocolError("malformed", "protected header of a device message is 10..255 bytes")
    end = start + length
    if length < 10 or end > len(data) or data[end - 10] != CTI or data[end - 9] != 0x48:
        raise ProtocolError("malformed", "protected header does not end with an 8-byte cti")
    return int.from_bytes(data[end - 8 : end - 4], "big"), int.from_bytes(data[end - 4 : end], "big")
