"""COSE_Sign1 (RFC 9052 section 4.2, CBOR tag 18) with Ed25519, over deterministic CBOR.

The signing half (sign1, sig_structure, the header labels) is fp.cose_sign, re-exported here: a
running device holds only that one, and loads this module with what it parses (fp.inbound,
fp.release), dropped after.
"""

from fp import cbor, const
from fp.cose_sign import ALG_EDDSA as ALG_EDDSA  # re-exported with sign1: the host signs with them
from fp.cose_sign import H_ALG, H_CONTENT_TYPE, H_CWT_CLAIMS, sig_structure
from fp.cose_sign import sign1 as sign1
from fp.errors import ProtocolError

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any, Callable

_TAG_SIGN1 = const(18)  # fp.cose_sign's too: a const() has no global to import
ALG_ED25519 = const(-19)  # accepted too (RFC 9864, fully-specified Ed25519)
_ACCEPTED_ALGS = const((-8, -19))  # ALG_EDDSA and ALG_ED25519: a const() tuple holds no names
_BAD_ALG = const("bad-alg")  # a const() str is not a name in a board's pool (fp.inbound)
_SIGNATURE_BYTES = const(64)


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
