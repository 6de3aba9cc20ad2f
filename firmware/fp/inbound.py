"""What a device parses and judges: owner commands, the kind of any message, and the COSE_Sign1
they come in (`Sign1`, `parse_sign1`, `verify_sign1`; fp.cose re-exports them for the host).

A device loads this for one command and drops it after (fp.device), or keeps it while a
destination takes receipts (fp.receipts parses those with it, for fp.receipted). fp.messages
re-exports all of it for the host, with the parsers and encoders only the host and the agent need.
See docs/protocol.md.

Each name a module loaded on a board makes (its functions, arguments, attributes, globals, and its
str constants of up to 10 characters) stays in MicroPython's name pool after the module is dropped,
and the first command would take the pool into its next chunk (about 4.5 KB on 32 bits) for good:
so the kinds are one const() tuple, and the refusal reasons that no module a board keeps names are
const() strs, which MicroPython folds into the code as objects, not names.
"""

import hashlib

from fp import cbor, const
from fp.cose_sign import H_ALG, H_CONTENT_TYPE, H_CWT_CLAIMS, sig_structure
from fp.device_messages import AUD, CTI, EXP, IAT, ISS
from fp.errors import ProtocolError
from fp.ids import id_from_public_key, is_valid_id

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any, Callable

    Verify = Callable[[bytes, bytes, bytes], Any]  # (public key, data, signature); raises if bad

_TAG_SIGN1 = const(18)  # fp.cose_sign's too: a const() has no global to import
_ACCEPTED_ALGS = const((-8, -19))  # EdDSA and Ed25519 (fp.cose.ALG_ED25519): a const() tuple holds no names
_BAD_ALG = const("bad-alg")
_SIGNATURE_BYTES = const(64)

# Every kind of protocol v1: (content type, kind, the most bytes a message of it may have).
# fp.messages names each content type (CT_COMMAND, ...) and gives KIND_OF and MAX_BYTES from here.
# Content types from 65201 are in the experimental-use CoAP Content-Format range (RFC 7252
# section 12.3); 112 is application/senml+cbor.
KINDS = const(
    (
        (112, "reading", 1024),
        (65201, "command", 4096),
        (65202, "ack", 1024),
        (65203, "card", 512),
        (65204, "status", 512),
        (65205, "endorsement", 512),
        (65206, "grant", 4096),
        (65207, "receipt", 512),
        (65212, "proffer", 4096),  # first-party terms (fp.terms): the owner proffers an agreement
        (65213, "answer", 1024),  # the second party's signed accept, alternative or decline of one proffer
        (65214, "termination", 1024),  # the owner ends an agreement early
        (65215, "termination-ack", 1024),  # the second party's signed receipt of a termination
    )
)
_WRONG_KIND = const("wrong-kind")
_UNCLAIMED = const("unclaimed")
_NOT_OWNER = const("not-owner")
_NOT_FOR_ME = const("not-for-me")
_REPLAY = const("replay")
_EXPIRED = const("expired")
_IAT = const("iat")


class Sign1:
    """A parsed COSE_Sign1: the protected header map and the raw bytes needed to verify it."""

    # one object per message instead of two on CPython (MicroPython ignores __slots__)
    __slots__ = ("raw", "protected_bytes", "protected", "payload", "signature", "content_type", "claims")

    def __init__(
        self,
        raw: bytes,
        protected_bytes: bytes,
        protected: "dict[Any, Any]",
        payload: bytes,
        signature: bytes,
    ):
        self.raw = raw
        self.protected_bytes = protected_bytes
        self.protected = protected
        self.payload = payload
        self.signature = signature
        self.content_type: "Any" = protected.get(H_CONTENT_TYPE)
        self.claims: "dict[Any, Any]" = protected.get(H_CWT_CLAIMS, {})

    def to_be_signed(self) -> bytes:
        """Return the Sig_structure bytes the signature covers."""
        return sig_structure(self.protected_bytes, self.payload)


def parse_sign1(data: bytes, max_bytes: int) -> Sign1:
    """Parse bytes into a Sign1 or raise ProtocolError; does not check the signature."""
    if len(data) > max_bytes:
        raise ProtocolError("oversized", "%d bytes, limit %d" % (len(data), max_bytes))
    message = cbor.decode(data)
    if not isinstance(message, cbor.Tag) or message.tag != _TAG_SIGN1:
        raise ProtocolError("malformed", "not a COSE_Sign1 (CBOR tag 18)")
    parts = message.value
    if not isinstance(parts, list) or len(parts) != 4:
        raise ProtocolError("malformed", "COSE_Sign1 must be an array of 4")
    protected_bytes, unprotected, payload, signature = parts
    if not isinstance(protected_bytes, bytes) or not isinstance(payload, bytes):
        raise ProtocolError("malformed", "protected header and payload must be byte strings")
    if unprotected != {}:
        raise ProtocolError("malformed", "unprotected header must be empty")
    if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_BYTES:
        raise ProtocolError("malformed", "Ed25519 signature must be 64 bytes")
    protected = cbor.decode(protected_bytes) if protected_bytes else {}
    if not isinstance(protected, dict):
        raise ProtocolError("malformed", "protected header must be a map")
    alg = protected.get(H_ALG)
    if alg not in _ACCEPTED_ALGS:
        raise ProtocolError(_BAD_ALG, "alg %r is not EdDSA (-8) or Ed25519 (-19)" % (alg,))
    claims = protected.get(H_CWT_CLAIMS, {})
    if not isinstance(claims, dict):
        raise ProtocolError("malformed", "CWT claims header must be a map")
    return Sign1(bytes(data), protected_bytes, protected, payload, signature)


def verify_sign1(
    message: Sign1, public_key: bytes | None, verify: "Callable[[bytes, bytes, bytes], Any]"
) -> None:
    """Check the signature of a parsed Sign1; `verify(key, data, sig)` raises on failure."""
    if public_key is None or len(public_key) != 32:
        raise ProtocolError("malformed", "Ed25519 public key must be 32 bytes")
    try:
        verify(public_key, message.to_be_signed(), message.signature)
    except MemoryError:
        raise  # no room to check is not a forgery: the caller answers it as such
    except Exception:
        raise ProtocolError("bad-signature", "signature does not verify with the device key")


def kind_of(message: Sign1) -> str:
    """Return the kind named by a parsed Sign1's content type, or raise 'wrong-kind'."""
    for content_type, kind, _ in KINDS:
        if content_type == message.content_type:
            return kind
    raise ProtocolError(_WRONG_KIND, "content type %r is not a protocol v1 kind" % (message.content_type,))


def parse(data: bytes, kind: str) -> Sign1:
    """Parse bytes as a COSE_Sign1 of `kind`; raise ProtocolError otherwise."""
    max_bytes = [limit for _, name, limit in KINDS if name == kind][0]
    message = parse_sign1(data, max_bytes)
    found = kind_of(message)
    if found != kind:
        raise ProtocolError(_WRONG_KIND, "a %s where a %s was expected" % (found, kind))
    return message


def _int_or_none(value: "Any", name: str) -> "int | None":
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ProtocolError("malformed", name + " must be an integer")


class Command:
    """An owner command, parsed but not yet verified or judged."""

    def __init__(
        self,
        message: Sign1,
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


def _addressed(data: bytes, kind: str) -> "tuple[Sign1, str, str, int]":
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
    issued_s = _int_or_none(claims.get(IAT), _IAT)
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


def check_command(command, owner_key, device_id, last_counter, now_s, verify):
    """Judge a parsed command for this device; raise ProtocolError with the refusal reason.

    Order matters: the signature is checked before anything the sender chose is trusted, so a
    forged command is always 'not-owner' or 'bad-signature', never 'replay' or 'expired'.
    """
    if owner_key is None:
        raise ProtocolError(_UNCLAIMED, "device has no owner yet")
    if command.owner_id != id_from_public_key(owner_key):
        raise ProtocolError(_NOT_OWNER, "signed for owner " + command.owner_id)
    verify_sign1(command.message, owner_key, verify)
    if command.device_id != device_id:
        raise ProtocolError(_NOT_FOR_ME, "addressed to " + command.device_id)
    if command.counter <= last_counter:
        raise ProtocolError(_REPLAY, "counter %d not above %d" % (command.counter, last_counter))
    if now_s is not None and command.expires_s <= now_s:
        raise ProtocolError(_EXPIRED, "expired %d s ago" % (now_s - command.expires_s))
