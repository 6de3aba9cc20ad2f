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


def test_incremental_updates_equal_one_shot():
    data = _message(1000)
    hasher = sha512.SHA512()
    for start, end in ((0, 1), (1, 128), (128, 129), (129, 700), (700, 1000)):
        hasher.update(data[start:end])
    assert hasher.digest() == hashlib.sha512(data).digest()


@pytest.mark.parametrize("implementation", ["SHA512", "SHA512Python"])
def test_micropython_sha512_matches_hashlib(micropython, implementation):
    """The viper build (SHA512 on MicroPython) and the plain fallback, lengths 0..300 and FIPS."""
    lengths = list(range(301))
    script = f"""
import sys, json
from fp import sha512
H = sha512.{implementation}
print("viper" if sha512.HAS_VIPER else "plain")
for length in json.loads(sys.stdin.read()):
    data = bytes((7 * i + length) & 0xFF for i in range(length))
    print(H(data).digest().hex())
h = H()
for start, end in ((0, 1), (1, 128), (128, 129), (129, 700), (700, 1000)):
    h.update(bytes((7 * i + 1000) & 0xFF for i in range(start, end)))
print(h.digest().hex())
print(H(b"a" * 1000000).digest().hex() if H is sha512.SHA512 else "{MILLION_A}")
"""
    lines = micropython(script, stdin=json.dumps(lengths), timeout=180).split()
    assert lines[0] == "viper"
    for length, digest in zip(lengths, lines[1:302], strict=True):
        assert digest == hashlib.sha512(_message(length)).hexdigest(), length
    assert lines[302] == hashlib.sha512(_message(1000)).hexdigest()
    assert lines[303] == MILLION_A


def test_cpython_uses_the_plain_implementation():
    assert not sha512.HAS_VIPER and sha512.SHA512 is sha512.SHA512Python
    assert sys.implementation.name == "cpython"
