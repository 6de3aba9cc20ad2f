"""The device card: a CWT (RFC 8392) binding the device's id, its key (RFC 8747 cnf), board,
firmware and owner, signed by the device (docs/protocol.md).

A board signs one when it announces itself (each connect, a claim or a hand-over, the HTTP API's
/card at most once per 5 s) and at flash time (fp.identity.card_at_flash): rarely, so it loads
this for the card and drops it after (fp.device.Device.card). The host imports it through
fp.messages.
"""

from fp import FIRMWARE_VERSION, cbor, const, cose_sign
from fp.device_messages import CNF, CT_CARD, IAT, ISS, SUB
from fp.ids import id_from_public_key

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any

    from fp.device_messages import Sign
    from fp.ed25519 import SigningKey


def cose_key(public_key: bytes) -> "dict[int, Any]":
    """Return the COSE_Key (RFC 9053) map of an Ed25519 public key."""
    return {1: 1, -1: 6, -2: bytes(public_key)}  # kty OKP, crv Ed25519, x


def encode_card(
    sign: "Sign",
    public_key: bytes,
    board: str,
    firmware: str,
    time_s: "float | None" = None,
    owner_id: "str | None" = None,
) -> bytes:
    """Sign the device card: a CWT (RFC 8392) binding id, key (RFC 8747 cnf), board and firmware."""
    device_id = id_from_public_key(public_key)
    claims = {ISS: device_id, SUB: device_id, CNF: {1: cose_key(public_key)}, "board": board, "fw": firmware}
    if time_s is not None:
        claims[IAT] = int(time_s)
    if owner_id is not None:
        claims["owner"] = owner_id
    header = {cose_sign.H_ALG: cose_sign.ALG_EDDSA, cose_sign.H_CONTENT_TYPE: CT_CARD}
    return cose_sign.sign1(sign, header, cbor.encode(claims))


def card(key: "SigningKey", board_name: str, owner_key: "bytes | None", now_s: "float | None") -> bytes:
    """This device's signed card: its key, board, firmware version and owner (if any)."""
    owner_id = id_from_public_key(owner_key) if owner_key else None
    return encode_card(key.sign, key.public, board_name, FIRMWARE_VERSION, now_s, owner_id)
