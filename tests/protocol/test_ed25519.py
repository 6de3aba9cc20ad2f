"""Ed25519 for the firmware against RFC 8032, libsodium (PyNaCl), cryptography and the ed25519 package.

The firmware's verify must accept exactly what libsodium accepts, so every edge case below is
decided by PyNaCl first and the firmware (under CPython and under MicroPython) must agree.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import ed25519 as ed25519_package
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.exceptions import BadSignatureError as NaclBadSignature
from nacl.signing import SigningKey, VerifyKey

from fp import ed25519, ed25519_int

VECTORS = json.loads((Path(__file__).parent / "rfc8032_vectors.json").read_text())
L = ed25519.L
P = 2**255 - 19


def libsodium_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public).verify(message, signature)
        return True
    except (NaclBadSignature, ValueError):
        return False


def firmware_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        ed25519.verify(public, message, signature)
        return True
    except ed25519.BadSignatureError:
        return False


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_rfc8032_section_7_1_vectors_under_cpython(vector):
    seed, message = bytes.fromhex(vector["seed"]), bytes.fromhex(vector["message"])
    key = ed25519.SigningKey(seed)
    assert key.public.hex() == vector["public"]
    assert key.sign(message).hex() == vector["signature"]
    ed25519.verify(key.public, message, bytes.fromhex(vector["signature"]))


def _point_add_small_order(public: bytes) -> bytes:
    """Return the encoding of A + T for an order-8 point T (a mixed-order key)."""
    torsion = ed25519_int._decode_negated(
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
    )
    minus_a = ed25519_int._decode_negated(public)
    # -(-A) + (-T') where -T' is also of order 8
    a = ((P - minus_a[0]) % P, minus_a[1], 1, (P - minus_a[3]) % P)
    return ed25519_int._encode(ed25519_int.add(a, ed25519_int._cached(torsion), 1))


def edge_cases() -> list[tuple[str, bytes, bytes, bytes]]:
    """(name, public key, message, signature) for the cases where implementations often differ."""
    rng = random.Random(8032)
    key = SigningKey(bytes(range(1, 33)))
    public = bytes(key.verify_key)
    message = b"Firstparty edge cases"
    signature = key.sign(message).signature
    r, s = signature[:32], int.from_bytes(signature[32:], "little")
    cases = [("valid", public, message, signature)]
    for bit in (0, 7, 100, 255, 256, 300, 511):
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << (bit % 8)
        cases.append((f"signature bit {bit} flipped", public, message, bytes(flipped)))
    for bit in (0, 9, 254, 255):
        flipped = bytearray(public)
        flipped[bit // 8] ^= 1 << (bit % 8)
        cases.append((f"key bit {bit} flipped", bytes(flipped), message, signature))
    cases.append(("message bit flipped", public, b"Firstparty edge casef", signature))
    cases.append(("S + L (non-canonical S)", public, message, r + (s + L).to_bytes(32, "little")))
    cases.append(("S = 2^256 - 1", public, message, r + bytes([0xFF]) * 32))
    small_order = [
        bytes(32),
        (1).to_bytes(32, "little"),
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        (P - 1).to_bytes(32, "little"),
        P.to_bytes(32, "little"),
        (P + 1).to_bytes(32, "little"),
    ]
    for index, encoding in enumerate(small_order):
        for sign_bit in (0, 0x80):
            enc = bytearray(encoding)
            enc[31] |= sign_bit
            cases.append(
                (f"small-order R #{index} sign {sign_bit}", public, message, bytes(enc) + signature[32:])
            )
            cases.append((f"small-order key #{index} sign {sign_bit}", bytes(enc), message, signature))
            # a small-order key with S = 0 and R = identity satisfies the cofactorless equation
            cases.append(
                (
                    f"small-order key #{index} trivial sig",
                    bytes(enc),
                    message,
                    (1).to_bytes(32, "little") + bytes(32),
                )
            )
    for y in range(2, 40):
        encoding = y.to_bytes(32, "little")
        if ed25519_int._decode_negated(encoding) is None:
            cases.append((f"key y={y} not on the curve", encoding, message, signature))
            break
    cases.append(("non-canonical key y = p + 3", (P + 3).to_bytes(32, "little"), message, signature))
    r_int = int.from_bytes(r, "little") & (2**255 - 1)
    if r_int + P < 2**255:
        cases.append(
            ("non-canonical R (y + p)", public, message, (r_int + P).to_bytes(32, "little") + signature[32:])
        )
    # mixed-order keys: A + T with T of order 8; the cofactorless equation holds only sometimes
    mixed = _point_add_small_order(public)
    for i in range(16):
        text = b"mixed %d" % i
        nonce = rng.randrange(1, L)
        R = ed25519_int.base_encode(nonce)
        k = ed25519._hash_mod_l(R, mixed, text)
        scalar = ed25519.SigningKey(bytes(range(1, 33)))._scalar
        forged = R + ((nonce + k * scalar) % L).to_bytes(32, "little")
        cases.append((f"mixed-order key #{i}", mixed, text, forged))
    return cases


def test_edge_cases_decided_like_libsodium_under_cpython():
    cases = edge_cases()
    decisions = {name: libsodium_accepts(pk, msg, sig) for name, pk, msg, sig in cases}
    assert decisions["valid"] and not decisions["S + L (non-canonical S)"]
    assert any(decisions[f"mixed-order key #{i}"] for i in range(16))  # the corpus exercises both outcomes
    assert not all(decisions[f"mixed-order key #{i}"] for i in range(16))
    for name, pk, msg, sig in cases:
        assert firmware_accepts(pk, msg, sig) == decisions[name], name


def test_micropython_agrees_with_libsodium_on_vectors_random_keys_and_edge_cases(micropython):
    """RFC vectors, 200 random PyNaCl signatures verified by the firmware, 200 firmware signatures
    verified by libsodium, cryptography and the ed25519 package, and every edge case, in one run."""
    rng = random.Random(25519)
    randoms = []
    for _ in range(200):
        seed = rng.randbytes(32)
        message = rng.randbytes(rng.randrange(0, 300))
        key = SigningKey(seed)
        randoms.append(
            [seed.hex(), message.hex(), bytes(key.verify_key).hex(), key.sign(message).signature.hex()]
        )
    cases = [[name, pk.hex(), msg.hex(), sig.hex()] for name, pk, msg, sig in edge_cases()]
    script = """
import sys, json
from fp import ed25519, ed25519_int
data = json.loads(sys.stdin.read())
def accepts(pk, msg, sig):
    try:
        ed25519.verify(bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig))
        return True
    except ed25519.BadSignatureError:
        return False
out = {"vectors": [], "signed": [], "verified": [], "edges": []}
for v in data["vectors"]:
    key = ed25519.SigningKey(bytes.fromhex(v["seed"]))
    sig = key.sign(bytes.fromhex(v["message"]))
    out["vectors"].append([key.public.hex(), sig.hex(), accepts(v["public"], v["message"], v["signature"])])
for seed, msg, pk, sig in data["randoms"]:
    key = ed25519.SigningKey(bytes.fromhex(seed))
    out["signed"].append([key.public.hex(), key.sign(bytes.fromhex(msg)).hex()])
    out["verified"].append(accepts(pk, msg, sig))
for name, pk, msg, sig in data["edges"]:
    out["edges"].append(accepts(pk, msg, sig))
print(json.dumps(out))
"""
    stdin = json.dumps({"vectors": VECTORS, "randoms": randoms, "edges": cases})
    # The test driver holds the whole corpus in memory; the firmware budget is measured elsewhere.
    result = json.loads(micropython(script, stdin=stdin, timeout=240, heapsize="32M"))
    for vector, (public, signature, accepted) in zip(VECTORS, result["vectors"], strict=True):
        assert (public, signature, accepted) == (vector["public"], vector["signature"], True), vector["name"]
    assert all(result["verified"]), "a PyNaCl signature failed firmware verify under MicroPython"
    for (_seed, message, public, _), (fw_public, fw_signature) in zip(randoms, result["signed"], strict=True):
        assert fw_public == public
        pk, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(fw_signature)
        VerifyKey(pk).verify(msg, sig)  # libsodium
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)  # cryptography (OpenSSL)
        ed25519_package.VerifyingKey(pk).verify(sig, msg)  # the ed25519 package (SUPERCOP ref10)
    for (name, pk, msg, sig), accepted in zip(cases, result["edges"], strict=True):
        assert accepted == libsodium_accepts(bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig)), name


def test_tampered_firmware_signature_is_refused_by_all_three_host_libraries():
    key = ed25519.SigningKey(bytes(range(32)))
    signature = bytearray(key.sign(b"reading"))
    signature[5] ^= 0x10
    with pytest.raises(NaclBadSignature):
        VerifyKey(key.public).verify(b"reading", bytes(signature))
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(key.public).verify(bytes(signature), b"reading")
    with pytest.raises(ed25519_package.BadSignatureError):
        ed25519_package.VerifyingKey(key.public).verify(bytes(signature), b"reading")


def test_verify_raises_instead_of_returning_false():
    key = ed25519.SigningKey(bytes(32))
    assert ed25519.verify(key.public, b"m", key.sign(b"m")) is None
    with pytest.raises(ed25519.BadSignatureError):
        ed25519.verify(key.public, b"n", key.sign(b"m"))
    with pytest.raises(ed25519.BadSignatureError):
        ed25519.verify(key.public[:31], b"m", key.sign(b"m"))
