"""The signed message kinds of protocol v1: readings, status, acks, cards, commands, receipts.

Every message is a COSE_Sign1 whose protected header carries alg, a content type that names its
kind (so a signature made for one kind can never pass as another) and RFC 9597 CWT claims.
See docs/protocol.md for the normative description.
"""

from fp import cbor, const, cose
from fp.device_card import cose_key, encode_card  # noqa: F401 (the device card, re-exported as below)
from fp.device_messages import (  # noqa: F401 (the device's part, re-exported: the host imports it all from here)
    AUD,
    CNF,
    CT_ACK,
    CT_CARD,
    CT_READING,
    CT_STATUS,
    CTI,
    EXP,
    IAT,
    ISS,
    SUB,
    U32,
    counter_id,
    counter_of,
    encode_ack,
    encode_reading,
    encode_status,
)
from fp.errors import ProtocolError
from fp.ids import check_key_matches_id, id_from_public_key, is_valid_id
from fp.inbound import (  # noqa: F401 (what a device parses, re-exported: the host imports it all from here)
    KINDS,
    Command,
    _int_or_none,
    check_command,
    kind_of,
    parse,
    parse_command,
)
from fp.receipts import MAX_RANGES, Receipt, check_receipt, parse_receipt  # noqa: F401 (re-exported)
from fp.senml_decode import decode_pack

# The content types the host names (fp.device_messages has the device's own), and per kind the
# most bytes a message may have: fp.inbound.KINDS, the one table of them all.
CT_COMMAND = 65201
CT_ENDORSEMENT = 65205
CT_GRANT = 65206
CT_RECEIPT = 65207
CT_PROFFER = 65212
CT_ANSWER = 65213
CT_TERMINATION = 65214
CT_TERMINATION_ACK = 65215
KIND_OF = {content_type: kind for content_type, kind, _ in KINDS}
# The operations a device interprets (fp.command.OPERATIONS, and claim), for the CLI and the API
OPS = ("set-destinations", "set-interval", "get-info", "reboot", "hand-over", "claim")
MAX_BYTES = {kind: max_bytes for _, kind, max_bytes in KINDS}
# the CBOR nesting limit, both ways: fp.cbor's and fp.cbor_decode's _MAX_DEPTH, const() there (no
# name in a board's pool, and no global to read under MicroPython); tests/protocol/test_cbor.py
# checks that the three agree
MAX_DEPTH = 16

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any, Callable

    Sign = Callable[[bytes], bytes]  # Ed25519: the 64-byte signature of the bytes given
    Verify = Callable[[bytes, bytes, bytes], Any]  # (public key, data, signature); raises if bad


def command_counter_id(counter: int) -> bytes:
    """Return the cti of an owner command: the counter as 8 bytes big-endian."""
    return counter.to_bytes(8, "big")


def encode_command(
    sign: "Sign",
    owner_public_key: bytes,
    device_id: str,
    counter: int,
    issued_s: float,
    expires_s: float,
    op: str,
    args: "dict[str, Any]",
) -> bytes:
    """Sign an owner command for `device_id` with a fresh counter and an expiry."""
    claims = {
        ISS: id_from_public_key(owner_public_key),
        AUD: device_id,
        EXP: int(expires_s),
        IAT: int(issued_s),
        CTI: command_counter_id(counter),
    }
    header = {cose.H_ALG: cose.ALG_EDDSA, cose.H_CONTENT_TYPE: CT_COMMAND, cose.H_CWT_CLAIMS: claims}
    return cose.sign1(sign, header, cbor.encode({"op": op, "args": args}))


class DeviceMessage:
    """A reading, status or ack from a device, parsed but not yet verified."""

    __slots__ = ("kind", "message", "device_id", "boot", "seq", "time_s", "body")  # as fp.cose.Sign1

    def __init__(
        self,
        kind: str,
        message: cose.Sign1,
        device_id: str,
        boot: int,
        seq: int,
        time_s: "int | None",
        body: "Any",
    ):
        self.kind = kind
        self.message = message
        self.device_id = device_id
        self.boot = boot
        self.seq = seq
        self.time_s = time_s
        self.body = body

    @property
    def raw(self) -> bytes:
        return self.message.raw


def parse_device_message(data: bytes, expected_kind: str) -> DeviceMessage:
    """Parse a reading, status or ack into a DeviceMessage (body decoded); signature not checked."""
    message = parse(data, expected_kind)
    claims = message.claims
    device_id = claims.get(SUB)
    if not is_valid_id(device_id):
        raise ProtocolError("malformed", "sub claim must be a device id")
    cti = claims.get(CTI)
    if not isinstance(cti, bytes) or len(cti) != 8:
        raise ProtocolError("malformed", "cti claim must be 8 bytes (boot, seq)")
    for key in claims:
        if key not in (SUB, CTI, IAT):
            raise ProtocolError("malformed", "claim %r is not used in device messages" % (key,))
    time_s = _int_or_none(claims.get(IAT), "iat")
    boot = int.from_bytes(cti[:4], "big")
    seq = int.from_bytes(cti[4:], "big")
    if expected_kind == "reading":
        body = decode_pack(message.payload)
    else:
        body = cbor.decode(message.payload)
        if not isinstance(body, dict):
            raise ProtocolError("malformed", expected_kind + " payload must be a map")
        if expected_kind == "ack":
            _check_ack_body(body)
        elif body.get("state") not in ("online", "offline"):
            raise ProtocolError("malformed", "status state must be online or offline")
    return DeviceMessage(expected_kind, message, device_id, boot, seq, time_s, body)


def _check_ack_body(body):
    if not isinstance(body.get("cmd"), bytes) or len(body["cmd"]) != 32:
        raise ProtocolError("malformed", "ack cmd must be the 32-byte SHA-256 of the command")
    _int_or_none(body.get("n"), "ack n")
    if not isinstance(body.get("outcome"), str) or not isinstance(body.get("detail"), str):
        raise ProtocolError("malformed", "ack outcome and detail must be text")


class Card:
    """A device card whose self-signature and id binding have been checked."""

    def __init__(
        self,
        message: cose.Sign1,
        device_id: str,
        public_key: bytes,
        board: str,
        firmware: str,
        time_s: int | None,
        owner_id: str | None,
    ):
        self.message = message
        self.device_id = device_id
        self.public_key = public_key
        self.board = board
        self.firmware = firmware
        self.time_s = time_s
        self.owner_id = owner_id


def confirmed_key(confirmation: "object", what: str) -> bytes:
    """The Ed25519 public key a cnf claim holds ({1: COSE_Key}, RFC 8747), for cards, endorsements
    and terms messages alike; ProtocolError 'malformed' naming `what` otherwise."""
    cose_key = confirmation.get(1) if isinstance(confirmation, dict) else None
    if not isinstance(cose_key, dict) or cose_key.get(1) != 1 or cose_key.get(-1) != 6:
        raise ProtocolError("malformed", what + " cnf must hold an Ed25519 OKP COSE_Key")
    key = cose_key.get(-2)
    if not isinstance(key, bytes) or len(key) != 32:
        raise ProtocolError("malformed", what + " key must be 32 bytes")
    return key


def parse_card(data: bytes, verify: "Verify") -> Card:
    """Parse and check a device card: key matches id, self-signature valid; return a Card."""
    message = parse(data, "card")
    claims = cbor.decode(message.payload)
    if not isinstance(claims, dict):
        raise ProtocolError("malformed", "card payload must be a CWT claims map")
    device_id = claims.get(SUB)
    if not is_valid_id(device_id) or claims.get(ISS) != device_id:
        raise ProtocolError("malformed", "card iss and sub must both be the device id")
    public_key = confirmed_key(claims.get(CNF), "card")
    check_key_matches_id(public_key, device_id)
    board = claims.get("board")
    firmware = claims.get("fw")
    owner_id = claims.get("owner")
    if not isinstance(board, str) or not isinstance(firmware, str):
        raise ProtocolError("malformed", "card board and fw must be text")
    if owner_id is not None and not is_valid_id(owner_id):
        raise ProtocolError("malformed", "card owner must be an owner id")
    cose.verify_sign1(message, public_key, verify)
    return Card(
        message, device_id, public_key, board, firmware, _int_or_none(claims.get(IAT), "iat"), owner_id
    )


def encode_endorsement(sign, signer_public_key, device_public_key, role, time_s):
    """Sign an endorsement: the owner or vendor vouches that this key is the device's."""
    if role not in ("owner", "vendor"):
        raise ValueError("role must be owner or vendor")
    device_id = id_from_public_key(device_public_key)
    claims = {ISS: id_from_public_key(signer_public_key), SUB: device_id, IAT: int(time_s)}
    header = {cose.H_ALG: cose.ALG_EDDSA, cose.H_CONTENT_TYPE: CT_ENDORSEMENT, cose.H_CWT_CLAIMS: claims}
    return cose.sign1(sign, header, cbor.encode({CNF: {1: cose_key(device_public_key)}, "role": role}))


class Endorsement:
    """A checked endorsement: `signer_id` vouches for `device_key` as device `device_id`."""

    def __init__(self, signer_id, device_id, device_key, role, time_s):
        self.signer_id = signer_id
        self.device_id = device_id
        self.device_key = device_key
        self.role = role
        self.time_s = time_s


def parse_endorsement(data, signer_public_key, verify):
    """Check an endorsement against the signer's key; raise ProtocolError otherwise."""
    message = parse(data, "endorsement")
    claims = message.claims
    if claims.get(ISS) != id_from_public_key(signer_public_key):
        raise ProtocolError("not-owner", "endorsement not issued by this signer")
    body = cbor.decode(message.payload)
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "endorsement payload must be a map")
    device_key = confirmed_key(body.get(CNF), "endorsement")
    if body.get("role") not in ("owner", "vendor"):
        raise ProtocolError("malformed", "endorsement role must be owner or vendor")
    check_key_matches_id(device_key, claims.get(SUB))
    cose.verify_sign1(message, signer_public_key, verify)
    return Endorsement(
        claims[ISS], claims[SUB], device_key, body["role"], _int_or_none(claims.get(IAT), "iat")
    )


def encode_receipt(
    sign: "Sign",
    signer_public_key: bytes,
    device_id: str,
    counter: int,
    ranges: "list[list[int]]",
    time_s: "float | None" = None,
    signer_id: "str | None" = None,
) -> bytes:
    """Sign a receipt: the signer has committed every (boot, seq) of `ranges` for `device_id`.

    `ranges` is a list of [boot, first_seq, last_seq] (inclusive), 1..MAX_RANGES of them;
    `counter` grows with every receipt of this signer (the device refuses one not above the last).
    """
    if not 0 < len(ranges) <= MAX_RANGES:
        raise ValueError("a receipt holds 1..%d ranges" % MAX_RANGES)
    signer_id = signer_id or id_from_public_key(signer_public_key)  # the caller may have it already
    claims = {ISS: signer_id, AUD: device_id, CTI: command_counter_id(counter)}
    if time_s is not None:
        claims[IAT] = int(time_s)
    header = {cose.H_ALG: cose.ALG_EDDSA, cose.H_CONTENT_TYPE: CT_RECEIPT, cose.H_CWT_CLAIMS: claims}
    return cose.sign1(sign, header, cbor.encode([[r[0], r[1], r[2]] for r in ranges]))
