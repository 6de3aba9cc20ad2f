"""What a device parses and judges: owner commands and receipts, and the kind of any message.

A device loads this for one command and drops it after (fp.device), or keeps it while a
destination takes receipts (fp.receipted). fp.messages re-exports all of it for the host, with the
parsers and encoders only the host and the agent need. See docs/protocol.md.
"""

import hashlib

from fp import cbor, const, cose
from fp.device_messages import AUD, CT_ACK, CT_CARD, CT_READING, CT_STATUS, CTI, EXP, IAT, ISS, U32
from fp.errors import ProtocolError
from fp.ids import id_from_public_key, is_valid_id

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any, Callable

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


def _int_or_none(value: "Any", name: str) -> "int | None":
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ProtocolError("malformed", name + " must be an integer")


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


def _addressed(data: bytes, kind: str) -> "tuple[cose.Sign1, str, str, int]":
    """A command's or a receipt's message, signer id, device id and counter (its 8-byte cti), checked."""
    message = parse(data, kind)
    claims = message.claims
    signer_id, device_id, cti = claims.get(ISS), claims.get(AUD), claims.get(CTI)
    if not is_valid_id(signer_id) or not is_valid_id(device_id):
        raise ProtocolError("malformed", kind + " iss and aud must be ids")
    if not isinstance(cti, bytes) or len(cti) != 8:
        raise ProtocolError("malformed", kind + " cti must be an 8-byte counter")
    return message, signer_id, device_id, int.from_bytes(cti, "big")


def parse_command(data: bytes) -> Command:
    """Parse an owner command; raise ProtocolError if any field is missing or mistyped."""
    message, owner_id, device_id, counter = _addressed(data, "command")
    claims = message.claims
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
    message, signer_id, device_id, counter = _addressed(data, "receipt")
    claims = message.claims
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
    return Receipt(message, signer_id, device_id, counter, time_s, ranges)


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
