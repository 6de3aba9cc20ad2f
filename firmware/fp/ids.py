"""Device and owner ids: derived from the Ed25519 public key, so anyone can check the binding."""

import hashlib

from fp import const
from fp.errors import ProtocolError

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import TypeGuard

_ID_LENGTH = const(24)  # base32 characters: 120 bits of SHA-256(public key)
# bytes, not str: on MicroPython each distinct one-character str a program makes (by indexing or
# iterating a str) becomes a name in the qstr pool for good; bytes give ints
_ALPHABET = const(b"abcdefghijklmnopqrstuvwxyz234567")


def base32(data: bytes) -> str:
    """Encode bytes as lowercase RFC 4648 base32 without padding."""
    out = bytearray()
    buffer = 0
    bits = 0
    for byte in data:
        buffer = (buffer << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append(_ALPHABET[(buffer >> bits) & 31])
    if bits:
        out.append(_ALPHABET[(buffer << (5 - bits)) & 31])
    return out.decode()


def id_from_public_key(public_key: bytes) -> str:
    """Return the id of an Ed25519 public key: base32 of the first 15 bytes of its SHA-256."""
    if len(public_key) != 32:
        raise ProtocolError("malformed", "an Ed25519 public key has 32 bytes, not %d" % len(public_key))
    return base32(hashlib.sha256(bytes(public_key)).digest()[:15])


def is_valid_id(text: object) -> "TypeGuard[str]":
    """True when `text` has the form of an id (24 lowercase base32 characters)."""
    if not isinstance(text, str) or len(text) != _ID_LENGTH:
        return False
    for byte in text.encode():
        if byte not in _ALPHABET:
            return False
    return True


def check_key_matches_id(public_key: bytes, expected_id: str | None) -> None:
    """Raise ProtocolError('unknown-device') unless `public_key` hashes to `expected_id`."""
    if id_from_public_key(public_key) != expected_id:
        raise ProtocolError("unknown-device", "public key does not belong to id " + str(expected_id))


_BROKER_PASSWORD_LABEL = const(b"firstparty broker password v1\x00")


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    inner_key = bytearray(key) + bytes(64 - len(key))
    outer_key = bytearray(inner_key)
    for index in range(64):  # a loop, not two generators: each is a function a board holds
        inner_key[index] ^= 0x36
        outer_key[index] ^= 0x5C
    inner = hashlib.sha256(inner_key)
    inner.update(message)
    outer = hashlib.sha256(outer_key)
    outer.update(inner.digest())
    return outer.digest()


def broker_password(seed: bytes, host: str, port: int) -> str:
    """The device's MQTT password for the broker at host:port: HMAC-SHA256 of its secret seed.

    Each broker gets its own (128 bits, as 32 hex digits), so what one broker learns (the vendor's)
    opens no other (the owner's). The seed never leaves the device: the flashing machine or the
    owner's agent asks the device for the password of one endpoint (docs/security.md).
    """
    realm = ("%s:%d" % (host, port)).encode()
    return _hmac_sha256(seed, _BROKER_PASSWORD_LABEL + realm)[:16].hex()
