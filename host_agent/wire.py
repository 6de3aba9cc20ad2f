"""The host's fast path from network bytes to verified protocol values: cbor2 and PyNaCl.

It accepts exactly what the firmware codec (fp.cbor, fp.cose, fp.messages) emits: cbor2 decodes
in C, and the firmware's own deterministic encoder re-encodes the result, which must give back
the very same bytes; anything else (indefinite lengths, non-shortest forms, unsorted or duplicate
keys, float16, trailing bytes, other tags) is refused as 'malformed'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2
from nacl.exceptions import BadSignatureError as NaclBadSignature
from nacl.signing import SigningKey, VerifyKey

from fp import cbor, messages
from fp.errors import ProtocolError


def _to_fp(value: Any) -> Any:
    """Convert what cbor2 decoded into the values fp.cbor encodes (tags become fp Tag)."""
    if isinstance(value, cbor2.CBORTag):
        return cbor.Tag(value.tag, _to_fp(value.value))
    if isinstance(value, (list, tuple)):  # cbor2 gives tuples for arrays inside tags and keys
        return [_to_fp(item) for item in value]
    if isinstance(value, Mapping):  # cbor2 gives frozendict for maps inside tags
        return {_to_fp(key): _to_fp(item) for key, item in value.items()}
    if isinstance(value, (bool, int, float, str, bytes)) or value is None:
        return value
    raise ProtocolError("malformed", f"CBOR item of type {type(value).__name__} is not used by the protocol")


def decode_strict(data: bytes) -> Any:
    """Decode one CBOR item in the deterministic profile, or raise ProtocolError('malformed')."""
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as error:
        raise ProtocolError("malformed", f"not CBOR: {error}") from None
    value = _to_fp(value)
    try:
        canonical = cbor.encode(value)
    except ProtocolError:
        raise
    except (ValueError, TypeError, OverflowError) as error:
        raise ProtocolError("malformed", f"not encodable in the profile: {error}") from None
    if canonical != bytes(data):
        raise ProtocolError(
            "malformed", "not in deterministic CBOR (RFC 8949 section 4.2) as the profile defines"
        )
    return value


def parse_device_message(data: bytes, kind: str) -> messages.DeviceMessage:
    """Parse a reading, status or ack through the fast path; the firmware codec's rules apply."""
    return messages.parse_device_message(data, kind, decode_strict)


def parse_card(data: bytes) -> messages.Card:
    """Parse and check a device card (id binding and self-signature) through the fast path."""
    return messages.parse_card(data, nacl_verify, decode_strict)


def parse_command(data: bytes) -> messages.Command:
    """Parse an owner command through the fast path."""
    return messages.parse_command(data, decode_strict)


def nacl_verify(public_key: bytes, data: bytes, signature: bytes) -> None:
    """Verify an Ed25519 signature with libsodium; raise ProtocolError('bad-signature')."""
    try:
        VerifyKey(bytes(public_key)).verify(bytes(data), bytes(signature))
    except (NaclBadSignature, ValueError, TypeError) as error:
        raise ProtocolError("bad-signature", str(error)) from None


def nacl_signer(seed: bytes):
    """Return a `sign(bytes) -> 64-byte signature` function for the protocol code."""
    key = SigningKey(bytes(seed))

    def sign(data: bytes) -> bytes:
        return key.sign(bytes(data)).signature

    return sign


def nacl_public_key(seed: bytes) -> bytes:
    """Return the Ed25519 public key of a 32-byte seed."""
    return bytes(SigningKey(bytes(seed)).verify_key)
