"""SHA-512 for the firmware: FIPS 180-4 vectors and every length 0..300 against hashlib, both interpreters."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from fp import sha512

FIPS = [
    (b"abc", None),
    (b"", None),
    (b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", None),
    (
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
        b"mnopqrstnopqrstu",
        None,
    ),
]
# FIPS 180-4 example digests, spelled out so the test does not only compare with hashlib.
FIPS_DIGESTS = {
    b"abc": "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
}
MILLION_A = (
    "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb"
    "de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b"
)


def _message(length: int) -> bytes:
    return bytes((7 * i + length) & 0xFF for i in range(length))


def test_plain_python_sha512_matches_hashlib_for_every_length_0_to_300():
    for length in range(301):
        data = _message(length)
        assert sha512.SHA512Python(data).digest() == hashlib.sha512(data).digest(), length


def test_fips_vectors_under_cpython():
    assert sha512.sha512(b"abc").hex() == FIPS_DIGESTS[b"abc"]
    for data, _ in FIPS:
        assert sha512.sha512(data) == hashlib.sha512(data).digest()
    assert hashlib.sha512(b"a" * 1_000_000).hexdigest() == MILLION_A  # the vector itself is right


def test_incremental_updates_and_parts_equal_one_shot():
    data = _message(1000)
    pieces = [data[start:end] for start, end in ((0, 1), (1, 128), (128, 129), (129, 700), (700, 1000))]
    hasher = sha512.SHA512Python()
    for piece in pieces:
        hasher.update(piece)
    assert hasher.digest() == hashlib.sha512(data).digest()
    assert sha512.sha512(*pieces) == hashlib.sha512(data).digest()


@pytest.mark.parametrize("implementation", ["sha512", "SHA512Python"])
def test_micropython_sha512_matches_hashlib(micropython, implementation):
    """The viper function (sha512 on MicroPython) and the plain fallback, lengths 0..300 and FIPS."""
    lengths = list(range(301))
    script = f"""
import sys, json
from fp import sha512
if "{implementation}" == "sha512":
    digest = sha512.sha512
else:
    def digest(*parts):
        h = sha512.SHA512Python()
        for part in parts:
            h.update(part)
        return h.digest()
print("viper" if sha512.HAS_VIPER else "plain")
for length in json.loads(sys.stdin.read()):
    data = bytes((7 * i + length) & 0xFF for i in range(length))
    print(digest(data).hex())
pieces = [bytes((7 * i + 1000) & 0xFF for i in range(start, end))
          for start, end in ((0, 1), (1, 128), (128, 129), (129, 700), (700, 1000))]
print(digest(*pieces).hex())
print(digest(b"a" * 1000000).hex() if "{implementation}" == "sha512" else "{MILLION_A}")
"""
    # a 1 MB message: more than the default heap of a 32-bit build
    lines = micropython(script, stdin=json.dumps(lengths), timeout=180, heapsize="4M").split()
    assert lines[0] == "viper"
    for length, digest in zip(lengths, lines[1:302], strict=True):
        assert digest == hashlib.sha512(_message(length)).hexdigest(), length
    assert lines[302] == hashlib.sha512(_message(1000)).hexdigest()
    assert lines[303] == MILLION_A


def test_cpython_uses_the_plain_implementation():
    assert not sha512.HAS_VIPER
    assert sha512.sha512(b"abc") == sha512.SHA512Python(b"abc").digest()
    assert sys.implementation.name == "cpython"
