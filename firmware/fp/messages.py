"""The signed message kinds of protocol v1: readings, status, acks, cards, commands, receipts.

Every message is a COSE_Sign1 whose protected header carries alg, a content type that names its
kind (so a signature made for one kind can never pass as another) and RFC 9597 CWT claims.
See docs/protocol.md for the normative description.
"""

import hashlib

from fp import cbor, cose, senml
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
    cose_key,
    counter_id,
    counter_of,
    encode_ack,
    encode_card,
    encode_reading,
    encode_status,
)
from fp.errors import ProtocolError
from fp.ids import check_key_matches_id, id_from_public_key, is_valid_id

TYPE_CHECKING = False  # the type checkers' view (pyright takes it as true); MicroPython has no typing
if TYPE_CHECKING:
    from typing import Any, Callable

    Sign = Callable[[bytes], bytes]  # Ed25519: the 64-byte signature of the bytes given
    Verify = Callable[[bytes, bytes, bytes], Any]  # (public key, data, signature); raises if bad

CT_COMMAND = 65201  # experimental-use CoAP Content-Format range (RFC 7252 section 12.3)
CT_ENDORSEMENT = 65205
CT_GRANT = 65206
CT_RECEIPT = 65207
CT_PROFFER = 65212  # first-party terms (fp.terms): the owner proffers an agreement from the roster
CT_ANSWER = 65213  # the second party's signed accept, alternative or decline of one proffer
CT_TERMINATION = 65214  # the owner ends an agreement early
CT_TERMINATION_ACK = 65215  # the second party's signed receipt of a termination
KIND_OF = {
    CT_READING: "reading",
    CT_COMMAND: "command",
    CT_ACK: "ack",
    CT_CARD: "card",
    CT_STATUS: "status",
    CT_ENDORSEMENT: "endorsement",
    CT_GRANT: "grant",
    CT_RECEIPT: "receipt",
    CT_PROFFER: "proffer",
    CT_ANSWER: "answer",
    CT_TERMINATION: "termination",
    CT_TERMINATION_ACK: "termination-ack",
}
MAX_BYTES = {
    "reading": 1024,
    "status": 512,
    "ack": 1024,
    "card": 512,
    "command": 4096,
    "endorsement": 512,
    "grant": 4096,
    "receipt": 512,
    "proffer": 4096,
    "answer": 1024,
    "termination": 1024,
    "termination-ack": 1024,
}
MAX_RANGES = 16  # (boot, first, last) ranges in one receipt: 16 of the widest fit 512 bytes


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


def kind_of(message: cose.Sign1) -> str:
    """Return the kind named by a parsed Sign1's content type, or raise 'wrong-kind'."""
    kind = KIND_OF.get(message.content_type)
    if kind is None:
        raise ProtocolError(
            "wrong-kind", "content type %r is not a protocol v1 kind" % (message.content_type,)
        )
    return kind


def parse(data: bytes, expected_kind: str) -> cose.Sign1:
    """Parse bytes as a COSE_Sign1 of `expected_kind`; raise ProtocolError otherwise."""
    message = cose.parse_sign1(data, MAX_BYTES[expected_kind])
    kind = kind_of(message)
    if kind != expected_kind:
        raise ProtocolError("wrong-kind", "a %s where a %s was expected" % (kind, expected_kind))
    return message


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


def _int_or_none(value: "Any", name: str) -> "int | None":
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ProtocolError("malformed", name + " must be an integer")


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
        body = senml.decode_pack(message.payload)
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


def parse_card(data: bytes, verify: "Verify") -> Card:
    """Parse and check a device card: key matches id, self-signature valid; return a Card."""
    message = parse(data, "card")
    claims = cbor.decode(message.payload)
    if not isinstance(claims, dict):
        raise ProtocolError("malformed", "card payload must be a CWT claims map")
    device_id = claims.get(SUB)
    if not is_valid_id(device_id) or claims.get(ISS) != device_id:
        raise ProtocolError("malformed", "card iss and sub must both be the device id")
    confirmation = claims.get(CNF)
    key = confirmation.get(1) if isinstance(confirmation, dict) else None
    if not isinstance(key, dict) or key.get(1) != 1 or key.get(-1) != 6:
        raise ProtocolError("malformed", "card cnf must hold an Ed25519 OKP COSE_Key")
    public_key = key.get(-2)
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise ProtocolError("malformed", "card key must be 32 bytes")
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
    confirmation = body.get(CNF)
    key = confirmation.get(1) if isinstance(confirmation, dict) else None
    if not isinstance(key, dict) or key.get(1) != 1 or key.get(-1) != 6 or not isinstance(key.get(-2), bytes):
        raise ProtocolError("malformed", "endorsement cnf must hold an Ed25519 OKP COSE_Key")
    if body.get("role") not in ("owner", "vendor"):
        raise ProtocolError("malformed", "endorsement role must be owner or vendor")
    device_key = key[-2]
    check_key_matches_id(device_key, claims.get(SUB))
    cose.verify_sign1(message, signer_public_key, verify)
    return Endorsement(
        claims[ISS], claims[SUB], device_key, body["role"], _int_or_none(claims.get(IAT), "iat")
    )


class Command:
    """An owner command, parsed but not yet verified or judged."""

    def __init__(
        self,
        message: cose.Sign1,
        owner_id: str,
        device_id: str,
        counter: int,
        issued_s: int,
        expires_s: int,
        op: str,
        args: "dict[str, Any]",
    ):
        self.message = message
        self.owner_id = owner_id
        self.device_id = device_id
        self.counter = counter
        self.issued_s = issued_s
        self.expires_s = expires_s
        self.op = op
        self.args = args

    def digest(self) -> bytes:
        """Return the SHA-256 of the command's bytes, which its acknowledgement binds."""
        return hashlib.sha256(self.message.raw).digest()


def parse_command(data: bytes) -> Command:
    """Parse an owner command; raise ProtocolError if any field is missing or mistyped."""
    message = parse(data, "command")
    claims = message.claims
    owner_id = claims.get(ISS)
    device_id = claims.get(AUD)
    cti = claims.get(CTI)
    if not is_valid_id(owner_id) or not is_valid_id(device_id):
        raise ProtocolError("malformed", "command iss and aud must be ids")
    if not isinstance(cti, bytes) or len(cti) != 8:
        raise ProtocolError("malformed", "command cti must be an 8-byte counter")
    issued_s = _int_or_none(claims.get(IAT), "iat")
    expires_s = _int_or_none(claims.get(EXP), "exp")
    if issued_s is None or expires_s is None:
        raise ProtocolError("malformed", "command needs iat and exp")
    body = cbor.decode(message.payload)
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("op"), str)
        or not isinstance(body.get("args"), dict)
    ):
        raise ProtocolError("malformed", "command payload must be {op: text, args: map}")
    counter = int.from_bytes(cti, "big")
    return Command(message, owner_id, device_id, counter, issued_s, expires_s, body["op"], body["args"])


def check_command(command, owner_public_key, device_id, last_counter, now_s, verify):
    """Judge a parsed command for this device; raise ProtocolError with the refusal reason.

    Order matters: the signature is checked before anything the sender chose is trusted, so a
    forged command is always 'not-owner' or 'bad-signature', never 'replay' or 'expired'.
    """
    if owner_public_key is None:
        raise ProtocolError("unclaimed", "device has no owner yet")
    if command.owner_id != id_from_public_key(owner_public_key):
        raise ProtocolError("not-owner", "signed for owner " + command.owner_id)
    cose.verify_sign1(command.message, owner_public_key, verify)
    if command.device_id != device_id:
        raise ProtocolError("not-for-me", "addressed to " + command.device_id)
    if command.counter <= last_counter:
        raise ProtocolError("replay", "counter %d not above %d" % (command.counter, last_counter))
    if now_s is not None and command.expires_s <= now_s:
        raise ProtocolError("expired", "expired %d s ago" % (now_s - command.expires_s))


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


class Receipt:
    """A receipt, parsed but not yet verified: `ranges` is a list of [boot, first_seq, last_seq]."""

    __slots__ = ("message", "signer_id", "device_id", "counter", "time_s", "ranges")

    def __init__(
        self,
        message: cose.Sign1,
        signer_id: str,
        device_id: str,
        counter: int,
        time_s: "int | None",
        ranges: "list[list[int]]",
    ):
        self.message = message
        self.signer_id = signer_id
        self.device_id = device_id
        self.counter = counter
        self.time_s = time_s
        self.ranges = ranges


def _is_u32(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U32


def parse_receipt(data: bytes) -> Receipt:
    """Parse a receipt into a Receipt; raise ProtocolError if a field is missing or mistyped."""
    message = parse(data, "receipt")
    claims = message.claims
    signer_id = claims.get(ISS)
    device_id = claims.get(AUD)
    cti = claims.get(CTI)
    if not is_valid_id(signer_id) or not is_valid_id(device_id):
        raise ProtocolError("malformed", "receipt iss and aud must be ids")
    if not isinstance(cti, bytes) or len(cti) != 8:
        raise ProtocolError("malformed", "receipt cti must be an 8-byte counter")
    for key in claims:
        if key not in (ISS, AUD, IAT, CTI):
            raise ProtocolError("malformed", "claim %r is not used in receipts" % (key,))
    ranges = cbor.decode(message.payload)
    if not isinstance(ranges, list) or not 0 < len(ranges) <= MAX_RANGES:
        raise ProtocolError("malformed", "receipt payload must be a list of 1..%d ranges" % MAX_RANGES)
    for entry in ranges:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not (_is_u32(entry[0]) and _is_u32(entry[1]) and _is_u32(entry[2]))
            or entry[1] > entry[2]
        ):
            raise ProtocolError("malformed", "a receipt range is [boot, first_seq, last_seq], first <= last")
    time_s = _int_or_none(claims.get(IAT), "iat")
    return Receipt(message, signer_id, device_id, int.from_bytes(cti, "big"), time_s, ranges)


def check_receipt(receipt, trusted_key, trusted_id, device_id, last_counter, verify):
    """Judge a parsed receipt for this device; raise ProtocolError with the refusal reason.

    `trusted_id` is id_from_public_key(trusted_key), computed once by the caller. The signature is
    checked before the address and the counter, which the sender chose.
    """
    if receipt.signer_id != trusted_id:
        raise ProtocolError("not-owner", "receipt signed by " + receipt.signer_id)
    cose.verify_sign1(receipt.message, trusted_key, verify)
    if receipt.device_id != device_id:
        raise ProtocolError("not-for-me", "receipt for " + receipt.device_id)
    if receipt.counter <= last_counter:
        raise ProtocolError("replay", "receipt %d not above %d" % (receipt.counter, last_counter))
