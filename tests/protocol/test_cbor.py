"""Deterministic CBOR: the firmware codec under CPython and MicroPython, against RFC 8949 and cbor2."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping

import cbor2
import pytest

from fp import cbor, cbor_decode
from fp.errors import ProtocolError

# (Python expression, expected encoding). From RFC 8949 appendix A where the profile agrees,
# and the profile's own float rule (float32 when exact, else float64; never float16).
VALID = [
    ("0", "00"),
    ("23", "17"),
    ("24", "1818"),
    ("100", "1864"),
    ("1000", "1903e8"),
    ("1000000", "1a000f4240"),
    ("1000000000000", "1b000000e8d4a51000"),
    ("18446744073709551615", "1bffffffffffffffff"),
    ("-1", "20"),
    ("-100", "3863"),
    ("-1000", "3903e7"),
    ("-18446744073709551616", "3bffffffffffffffff"),
    ("1.1", "fb3ff199999999999a"),
    ("1.0", "fa3f800000"),
    ("0.0", "fa00000000"),
    ("-0.0", "fa80000000"),
    ("100000.0", "fa47c35000"),
    ("3.4028234663852886e+38", "fa7f7fffff"),
    ("1.0e+300", "fb7e37e43c8800759c"),
    ("-4.1", "fbc010666666666666"),
    ("float('inf')", "fa7f800000"),
    ("float('-inf')", "faff800000"),
    ("False", "f4"),
    ("True", "f5"),
    ("None", "f6"),
    ("b''", "40"),
    ("b'\\x01\\x02\\x03\\x04'", "4401020304"),
    ("''", "60"),
    ("'IETF'", "6449455446"),
    ("'\\u00fc'", "62c3bc"),
    # the edges of well-formed UTF-8 (Unicode table 3-7), next to the ill-formed ones in INVALID
    ("'\\u0080'", "62c280"),
    ("'\\u0800'", "63e0a080"),
    ("'\\ud7ff'", "63ed9fbf"),
    ("'\\ue000'", "63ee8080"),
    ("'\\U00010000'", "64f0908080"),
    ("'\\U0010ffff'", "64f48fbfbf"),
    ("[]", "80"),
    ("[1, [2, 3], [4, 5]]", "8301820203820405"),
    ("{}", "a0"),
    ("{3: 4, 1: 2}", "a201020304"),
    ("{'b': [2, 3], 'a': 1}", "a26161016162820203"),
    # RFC 8949 section 4.2.1: keys sorted by the bytes of their encodings.
    ("{'aa': 0, 'z': 0, -1: 0, 100: 0, 10: 0}", "a50a00186400200061 7a00 62616100".replace(" ", "")),
    ("Tag(18, [b'', {}, b'', b''])", "d284" + "40a04040"),
]

# (encoding, why it must be refused)
INVALID = [
    ("", "empty"),
    ("1801", "integer not in shortest form"),
    ("190017", "integer not in shortest form"),
    ("5f4101ff", "indefinite byte string"),
    ("9f01ff", "indefinite array"),
    ("bf6161 01ff", "indefinite map"),
    ("a2616201616101", "unsorted map keys"),
    ("a2616101616101", "duplicate map keys"),
    ("f93c00", "float16"),
    ("fb3ff0000000000000", "float64 holding a float32 value"),
    ("fa7fc00001", "NaN with payload"),
    ("f7", "undefined"),
    ("f0", "simple value 16"),
    ("ff", "lone break"),
    ("0001", "trailing bytes"),
    ("62c328", "invalid UTF-8"),
    ("1c", "reserved additional information"),
    ("c249010000000000000000", "bignum tag 2 (outside 64 bits)"),
    ("5a00010000", "byte string longer than the message"),
    ("9b0000000100000000", "array longer than the message"),
    ("81" * 20 + "00", "nested too deep"),
    ("c100", "tag other than 18"),
    # ill-formed UTF-8 that MicroPython's own decoder lets through
    ("62c080", "overlong NUL"),
    ("62c1bf", "overlong 7-bit character"),
    ("63e08080", "overlong 3-byte form"),
    ("64f08fbfbf", "overlong 4-byte form"),
    ("63eda080", "surrogate D800"),
    ("63edbfbf", "surrogate DFFF"),
    ("64f4908080", "above U+10FFFF"),
    ("64f7bfbfbf", "lead byte F7"),
    ("6461c0800a", "overlong NUL inside a longer string"),
    ("a1 62c080 00", "overlong map key"),
    # map keys: integers and text only, so no two keys are equal as Python values
    ("a2 01 00 f5 00", "keys 1 and true"),
    ("a2 00 00 f4 00", "keys 0 and false"),
    ("a2 01 00 fa3f800000 00", "keys 1 and 1.0"),
    ("a2 fa00000000 00 fa80000000 00", "keys 0.0 and -0.0"),
    ("a1 f5 00", "key true"),
    ("a1 f6 00", "key null"),
    ("a1 4100 00", "byte string key"),
    ("a1 fa3f800000 00", "float key"),
]

# map keys that Python takes for one: the CBOR bytes of each pair, and the profile's refusal
EQUAL_KEYS = [
    ("a2 01 00 f5 00", (1, True)),
    ("a2 00 00 f4 00", (0, False)),
    ("a2 01 00 fa3f800000 00", (1, 1.0)),
    ("a2 fa00000000 00 fa80000000 00", (0.0, -0.0)),
]


def _value(expression):
    return eval(expression, {"Tag": cbor.Tag})  # noqa: S307 - test literals only


@pytest.mark.parametrize("expression,encoding", VALID)
def test_encoding_is_deterministic_and_round_trips_under_cpython(expression, encoding):
    value = _value(expression)
    assert cbor.encode(value).hex() == encoding
    decoded = cbor.decode(bytes.fromhex(encoding))
    assert cbor.encode(decoded).hex() == encoding


@pytest.mark.parametrize("encoding,why", INVALID)
def test_firmware_decoder_refuses_non_profile_cbor(encoding, why):
    with pytest.raises(ProtocolError) as error:
        cbor.decode(bytes.fromhex(encoding.replace(" ", "")))
    assert error.value.reason == "malformed"


def test_same_bytes_under_micropython(micropython):
    """The unchanged firmware codec gives the same bytes and the same refusals on the unix port."""
    script = """
import sys, json
from fp import cbor
from fp.errors import ProtocolError
Tag = cbor.Tag
cases = json.loads(sys.stdin.read())
out = []
for expression, encoding in cases["valid"]:
    value = eval(expression, {"Tag": Tag})
    got = cbor.encode(value).hex()
    back = cbor.encode(cbor.decode(bytes.fromhex(encoding))).hex()
    out.append([got, back])
refused = []
for encoding, why in cases["invalid"]:
    try:
        cbor.decode(bytes.fromhex(encoding.replace(" ", "")))
        refused.append("accepted")
    except ProtocolError as error:
        refused.append(error.reason)
print(json.dumps({"valid": out, "refused": refused}))
"""
    stdin = json.dumps({"valid": VALID, "invalid": INVALID})
    result = json.loads(micropython(script, stdin=stdin))
    for (expression, encoding), (got, back) in zip(VALID, result["valid"], strict=True):
        assert (got, back) == (encoding, encoding), expression
    assert result["refused"] == ["malformed"] * len(INVALID)


@pytest.mark.parametrize("key", [True, False, None, 1.0, b"k", (1,)])
def test_encoder_refuses_map_keys_other_than_integers_and_text(key):
    with pytest.raises(ProtocolError) as error:
        cbor.encode({key: 0})
    assert error.value.reason == "malformed"


@pytest.mark.parametrize("encoding,keys", EQUAL_KEYS)
def test_keys_python_merges_are_refused_where_cbor2_would_read_one_entry(encoding, keys):
    data = bytes.fromhex(encoding.replace(" ", ""))
    # another decoder reads one entry where the map says two: the reason the profile refuses them
    assert len(cbor2.loads(data)) == 1 and len(dict.fromkeys(keys)) == 1
    with pytest.raises(ProtocolError) as error:
        cbor.decode(data)
    assert error.value.reason == "malformed"


def test_utf8_state_machine_agrees_with_cpython_on_every_short_sequence():
    """The firmware's own UTF-8 check (run where MicroPython's falls short) is CPython's rule."""
    edges = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0]
    edges += [0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF7, 0xF8, 0xFF]
    samples = [bytes([a]) for a in edges] + [bytes([a, b]) for a in edges for b in edges]
    samples += [bytes([a, b, c]) for a in edges if a >= 0xC0 for b in edges if b >= 0x80 for c in edges]
    rng = random.Random(16)
    samples += [bytes([a, b, c, d]) for a, b, c, d in (rng.choices(edges, k=4) for _ in range(20000))]
    for sample in samples:
        try:
            sample.decode("utf-8")
            expected = True
        except UnicodeDecodeError:
            expected = False
        assert cbor_decode._is_utf8(b"x" + sample + b"x", 1, 1 + len(sample)) is expected, sample.hex()


def test_invalid_utf8_is_refused_by_cbor2_too():
    for encoding, why in INVALID:
        if "UTF-8" in why or "overlong" in why or "surrogate" in why or "U+10FFFF" in why or "F7" in why:
            with pytest.raises(Exception):  # noqa: B017 - cbor2's error type varies with its version
                cbor2.loads(bytes.fromhex(encoding.replace(" ", "")))


def _from_cbor2(value):
    """cbor2's values as fp.cbor's: CBORTag as Tag, the tuples and frozendicts inside tags as list, dict."""
    if isinstance(value, cbor2.CBORTag):
        return cbor.Tag(value.tag, _from_cbor2(value.value))
    if isinstance(value, (list, tuple)):
        return [_from_cbor2(item) for item in value]
    if isinstance(value, Mapping):
        return {_from_cbor2(key): _from_cbor2(item) for key, item in value.items()}
    return value


def _random_value(rng, depth=0):
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return rng.randrange(-(2**64), 2**64)
    if choice == 1:
        return rng.randbytes(rng.randrange(40))
    if choice == 2:
        return "".join(rng.choice("aZ9é€😀 ") for _ in range(rng.randrange(30)))
    if choice == 3:
        return rng.choice([True, False, None])
    if choice == 4:
        return rng.randrange(-1000, 1000)
    if choice == 5:
        return rng.randrange(300)
    if choice == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if choice == 7:
        return {
            rng.choice([rng.randrange(-50, 50), str(rng.randrange(99))]): _random_value(rng, depth + 1)
            for _ in range(4)
        }
    return cbor.Tag(18, _random_value(rng, depth + 1))


def test_cbor2_reads_what_the_firmware_writes_as_the_firmware_decodes_it():
    # cbor2 is an independent decoder to check ours against. Its canonical mode sorts keys
    # length-first (RFC 7049), not bytewise (RFC 8949 section 4.2.1), so the comparison is on
    # decoded values; the byte rules are pinned by VALID above.
    rng = random.Random(1234)
    for _ in range(500):
        value = _random_value(rng)
        ours = cbor.encode(value)
        assert _from_cbor2(cbor2.loads(ours)) == value
        assert cbor.decode(ours) == value


def test_float32_values_decode_identically_in_cbor2():
    for value in (21.5, -40.0, 1013.25, 3.4028234663852886e38, 1e-30):
        encoded = cbor.encode(value)
        assert encoded[0] == 0xFA or encoded[0] == 0xFB
        assert cbor2.loads(encoded) == value
    assert math.isnan(cbor2.loads(cbor.encode(float("nan"))))


def test_the_nesting_limit_is_one_figure_in_the_encoder_the_decoder_and_the_host_s_api():
    """fp.cbor and fp.cbor_decode each hold the limit as a const() (no name in a board's pool, no
    global to import under MicroPython); fp.messages gives it to the host: all three agree, and
    both directions refuse one level past it."""
    from fp import messages

    assert cbor._MAX_DEPTH == cbor_decode._MAX_DEPTH == messages.MAX_DEPTH
    deep: list = []
    for _ in range(messages.MAX_DEPTH):
        deep = [deep]
    data = cbor.encode(deep)
    assert cbor.decode(data) == deep
    with pytest.raises(ProtocolError):
        cbor.encode([deep])
    with pytest.raises(ProtocolError):
        cbor.decode(b"\x81" + data)
