"""COSE_Sign1 (RFC 9052 section 4.2, CBOR tag 18) made with Ed25519: the half of fp.cose a running
device holds.

A board signs every message it sends and parses only what comes in (a command, a receipt, a
release), so the parse and the verify (fp.cose, which re-exports this module) are loaded with
those and dropped after (fp.device.Device.drop_parsers, fp.ota.unload).
"""

from fp import cbor, const

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any, Callable

_TAG_SIGN1 = const(18)  # fp.cose's too: a const() has no global to import
ALG_EDDSA = const(-8)  # emitted
H_ALG = 1
H_CONTENT_TYPE = 3
H_CWT_CLAIMS = 15  # RFC 9597: CWT claims in the protected header
_SIGNATURE_BYTES = const(64)


def sig_structure(protected_bytes: bytes, payload: bytes) -> bytes:
    """Return the bytes that are signed: ["Signature1", protected, external_aad = h'', payload]."""
    return cbor.encode(["Signature1", protected_bytes, b"", payload])


def sign1(sign: "Callable[[bytes], bytes]", protected: "dict[int, Any]", payload: bytes) -> bytes:
    """Build a COSE_Sign1 message; `sign(bytes) -> 64 bytes` is the Ed25519 signer."""
    protected_bytes = cbor.encode(protected)
    signature = sign(sig_structure(protected_bytes, payload))
    if len(signature) != _SIGNATURE_BYTES:
        raise ValueError("signer returned %d bytes, not 64" % len(signature))
    return cbor.encode(cbor.Tag(_TAG_SIGN1, [protected_bytes, {}, payload, signature]))
