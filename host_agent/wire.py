"""The host's path from network bytes to verified protocol values: the firmware codec and PyNaCl.

Decoding is the firmware's own strict decoder (fp.cbor, fp.cose, fp.messages), run by CPython:
one codec decides what is accepted on the board and on the host. Signatures are libsodium's.
"""

from __future__ import annotations

from nacl.exceptions import BadSignatureError as NaclBadSignature
from nacl.signing import SigningKey, VerifyKey

from fp import messages
from fp.errors import ProtocolError


def parse_device_message(data: bytes, kind: str) -> messages.DeviceMessage:
    """Parse a reading, status or ack through the fast path; the firmware codec's rules apply."""
    return messages.parse_device_message(data, kind)


def parse_card(data: bytes) -> messages.Card:
    """Parse and check a device card (id binding and self-signature) through the fast path."""
    return messages.parse_card(data, nacl_verify)


def parse_command(data: bytes) -> messages.Command:
    """Parse an owner command through the fast path."""
    return messages.parse_command(data)


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
