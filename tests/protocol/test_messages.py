"""Protocol v1 messages: sizes, interop (PyNaCl, pycose), refusals with reasons, replay, both interpreters."""

from __future__ import annotations

import json
import re

import cbor2
import pytest
from nacl.signing import SigningKey
from pycose.algorithms import EdDSA
from pycose.headers import Algorithm, ContentType
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from fp import cbor, cose, ids, messages, replay, topic_parse, topics
from fp.errors import ProtocolError
from fp.reasons import REASONS
from host_agent import wire
from tests.helpers import REPO
from tests.protocol import examples

DEVICE_ID = examples.DEVICE_ID


def _reading(**changes):
    values = {"boot": 1, "seq": 1, "measurements": [("temp", "Cel", 21.5)], "time_s": examples.TIME_S}
    values.update(changes)
    return messages.encode_reading(
        wire.nacl_signer(examples.DEVICE_SEED),
        DEVICE_ID,
        values["boot"],
        values["seq"],
        values["measurements"],
        values["time_s"],
    )


def test_single_value_reading_with_id_counters_and_time_fits_150_bytes():
    assert len(_reading()) <= 150


def test_reading_verifies_with_pynacl_through_the_host_fast_path():
    parsed = messages.parse_device_message(_reading(), "reading")
    cose.verify_sign1(parsed.message, examples.DEVICE_KEY, wire.nacl_verify)
    assert (parsed.device_id, parsed.boot, parsed.seq, parsed.time_s) == (DEVICE_ID, 1, 1, examples.TIME_S)
    assert parsed.body == [("temp", "Cel", 21.5)]


def test_reading_verifies_with_pycose():
    key = OKPKey(crv=Ed25519, x=examples.DEVICE_KEY)
    # pycose 1.1's decode() expects a list and a dict inside the tag; cbor2 6 gives a tuple and a
    # frozendict there, so hand pycose the mutable forms it was written for.
    outer = cbor2.loads(_reading())
    assert outer.tag == 18
    parts = list(outer.value)
    parts[1] = dict(parts[1])
    decoded = Sign1Message.from_cose_obj(parts, True)
    decoded.key = key
    assert decoded.verify_signature()


def test_pycose_message_decodes_and_verifies_in_the_firmware_codec():
    key = OKPKey(crv=Ed25519, d=examples.DEVICE_SEED, x=examples.DEVICE_KEY)
    payload = cbor.encode([{0: "temp", 1: "Cel", 2: 21.5}])
    made = Sign1Message(phdr={Algorithm: EdDSA, ContentType: 112}, payload=payload)
    made.key = key
    encoded = made.encode(tag=True)
    parsed = messages.parse(encoded, "reading")
    cose.verify_sign1(parsed, examples.DEVICE_KEY, wire.nacl_verify)
    assert parsed.payload == payload


def test_alg_minus_19_is_accepted():
    signer = wire.nacl_signer(examples.DEVICE_SEED)
    header = {1: cose.ALG_ED25519, 3: messages.CT_READING, 15: {2: DEVICE_ID, 7: messages.counter_id(1, 9)}}
    data = cose.sign1(signer, header, cbor.encode([{0: "t", 2: 1}]))
    parsed = messages.parse_device_message(data, "reading")
    cose.verify_sign1(parsed.message, examples.DEVICE_KEY, wire.nacl_verify)


def _tamper_cases():
    good = _reading()
    outer = cbor2.loads(good)
    protected, _, payload, signature = outer.value

    def sign1(protected_map, body=payload, unprotected=None, sig=None, tag=18):
        protected_bytes = cbor.encode(protected_map)
        signer = wire.nacl_signer(examples.DEVICE_SEED)
        to_sign = cose.sig_structure(protected_bytes, body)
        return cbor2.dumps(
            cbor2.CBORTag(tag, [protected_bytes, unprotected or {}, body, sig or signer(to_sign)])
        )

    header = cbor.decode(protected)
    flipped = bytearray(good)
    flipped[-1] ^= 1
    return [
        ("malformed CBOR", good[:-5], "malformed"),
        ("trailing bytes", good + b"\x00", "malformed"),
        ("wrong tag", sign1(header, tag=98), "malformed"),
        ("unknown alg", sign1({**header, 1: -7}), "bad-alg"),
        ("missing alg", sign1({k: v for k, v in header.items() if k != 1}), "bad-alg"),
        ("indefinite-length array", b"\xd2\x9f" + good[2:] + b"\xff", "malformed"),
        ("non-empty unprotected header", sign1(header, unprotected={4: b"kid"}), "malformed"),
        ("oversized", sign1(header, body=cbor.encode([{0: "t", 3: "x" * 1100}])), "oversized"),
        ("wrong kind", sign1({**header, 3: messages.CT_STATUS}), "wrong-kind"),
        (
            "short signature",
            cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature[:63]])),
            "malformed",
        ),
        ("not SenML", sign1(header, body=cbor.encode({"temp": 1})), "malformed"),
        ("flipped signature bit", bytes(flipped), "bad-signature"),
    ]


@pytest.mark.parametrize("name,data,reason", _tamper_cases(), ids=[c[0] for c in _tamper_cases()])
def test_bad_messages_are_refused_with_their_reason_by_host_and_firmware(name, data, reason):
    for parse in (messages.parse_device_message, messages.parse_device_message):
        with pytest.raises(ProtocolError) as error:
            parsed = parse(data, "reading")
            cose.verify_sign1(parsed.message, examples.DEVICE_KEY, wire.nacl_verify)
        assert error.value.reason == reason, (name, str(error.value))
        assert error.value.reason in REASONS


def test_wrong_key_length_is_refused():
    parsed = messages.parse_device_message(_reading(), "reading")
    with pytest.raises(ProtocolError) as error:
        cose.verify_sign1(parsed.message, examples.DEVICE_KEY[:31], wire.nacl_verify)
    assert error.value.reason == "malformed"


def test_no_memory_to_verify_is_not_called_a_forgery_under_both_interpreters(micropython):
    """A MemoryError while checking a signature is raised as one: answering `bad-signature` would
    record the owner's own command as a forgery (seen on the device at the edge of its heap)."""

    def out_of_memory(key, data, signature):
        raise MemoryError

    parsed = messages.parse_device_message(_reading(), "reading")
    with pytest.raises(MemoryError):
        cose.verify_sign1(parsed.message, examples.DEVICE_KEY, out_of_memory)
    script = """
import sys
from fp import cose, messages
def out_of_memory(key, data, signature):
    raise MemoryError
def forged(key, data, signature):
    raise ValueError("forged")
parsed = messages.parse_device_message(bytes.fromhex(sys.stdin.read()), "reading")
for check in (out_of_memory, forged):
    try:
        cose.verify_sign1(parsed.message, bytes(32), check)
    except MemoryError:
        print("MemoryError")
    except Exception as error:
        print(error.reason)
"""
    assert micropython(script, stdin=_reading().hex()).split() == ["MemoryError", "bad-signature"]


def test_device_id_is_derived_from_the_key_and_checked():
    assert ids.is_valid_id(DEVICE_ID)
    other = bytes(SigningKey(bytes(32)).verify_key)
    with pytest.raises(ProtocolError) as error:
        ids.check_key_matches_id(other, DEVICE_ID)
    assert error.value.reason == "unknown-device"


def test_card_binds_key_id_board_and_owner():
    card = wire.parse_card(examples.build()["card"])
    assert (card.device_id, card.public_key, card.board, card.owner_id) == (
        DEVICE_ID,
        examples.DEVICE_KEY,
        "esp32-devkitc",
        examples.OWNER_ID,
    )


def test_card_signed_by_another_key_is_refused():
    impostor = wire.nacl_signer(bytes(32))
    forged = messages.encode_card(impostor, examples.DEVICE_KEY, "esp32-devkitc", "0.1.0")
    with pytest.raises(ProtocolError) as error:
        wire.parse_card(forged)
    assert error.value.reason == "bad-signature"


def test_command_checks_owner_address_counter_and_expiry():
    owner = wire.nacl_signer(examples.OWNER_SEED)
    now = examples.TIME_S

    def command(counter=8, device_id=DEVICE_ID, expires=now + 60, signer=owner, key=examples.OWNER_KEY):
        data = messages.encode_command(signer, key, device_id, counter, now, expires, "get-info", {})
        return messages.parse_command(data)

    messages.check_command(command(), examples.OWNER_KEY, DEVICE_ID, 7, now, wire.nacl_verify)
    other_id = ids.id_from_public_key(bytes(32))
    stranger_seed = bytes([9] * 32)
    stranger_key = wire.nacl_public_key(stranger_seed)
    cases = [
        (command(counter=7), "replay"),
        (command(device_id=other_id), "not-for-me"),
        (command(expires=now), "expired"),
        (command(signer=wire.nacl_signer(stranger_seed), key=stranger_key), "not-owner"),
        # claims the owner's id but is signed by someone else
        (command(signer=wire.nacl_signer(stranger_seed)), "bad-signature"),
    ]
    for parsed, reason in cases:
        with pytest.raises(ProtocolError) as error:
            messages.check_command(parsed, examples.OWNER_KEY, DEVICE_ID, 7, now, wire.nacl_verify)
        assert error.value.reason == reason
    with pytest.raises(ProtocolError) as error:
        messages.check_command(command(), None, DEVICE_ID, 7, now, wire.nacl_verify)
    assert error.value.reason == "unclaimed"


def test_topics_are_versioned_and_parsed_back():
    assert topics.topic(DEVICE_ID, "reading") == f"fp/v1/{DEVICE_ID}/reading"
    assert topic_parse.parse(topics.topic(DEVICE_ID, "status")) == (DEVICE_ID, "status")
    for bad in (
        "fp/v2/x/reading",
        f"fp/v1/{DEVICE_ID}/secret",
        "fp/v1/NOTANID/reading",
        f"fp/v1/{DEVICE_ID}/reading/x",
    ):
        with pytest.raises(ProtocolError) as error:
            topic_parse.parse(bad)
        assert error.value.reason == "wrong-topic"


def test_replay_window_accepts_reordering_and_refuses_repeats_and_old_boots():
    window = replay.ReplayWindow()
    for seq in (5, 3, 4, 10, 6):
        window.accept(2, seq)
    for boot, seq in ((2, 5), (2, 3), (1, 99)):
        with pytest.raises(ProtocolError) as error:
            window.accept(boot, seq)
        assert error.value.reason == "replay"
    window.accept(2, 10 + replay.WINDOW)
    with pytest.raises(ProtocolError):
        window.accept(2, 10)  # fell out of the window
    window.accept(3, 0)
    restored = replay.ReplayWindow(*window.state())
    with pytest.raises(ProtocolError):
        restored.accept(3, 0)


def test_doc_examples_are_byte_exact():
    """docs/protocol.md shows each example's hex; it must be what the codec builds today."""
    text = (REPO / "docs" / "protocol.md").read_text()
    shown = dict(re.findall(r"<!-- example: ([a-z-]+) -->\s*```\s*\n([0-9a-f\n]+)```", text))
    built = examples.build()
    assert set(shown) == set(built)
    for name, data in built.items():
        assert shown[name].replace("\n", "") == data.hex(), name


def test_micropython_builds_the_same_bytes_and_refuses_the_same_messages(micropython):
    """The unchanged codec on the unix port: same encoding, same parse results, same refusals."""
    zero_signer_reading = messages.encode_reading(
        lambda b: bytes(64), DEVICE_ID, 4, 9, [("rh", "%RH", 40.25), ("ok", None, True)], 5
    )
    bad = [(name, data.hex()) for name, data, _ in _tamper_cases() if name != "flipped signature bit"]
    script = """
import sys, json
from fp import messages, replay
from fp.errors import ProtocolError
cases = json.loads(sys.stdin.read())
made = messages.encode_reading(lambda b: bytes(64), cases["id"], 4, 9, [("rh", "%RH", 40.25), ("ok", None, True)], 5)
parsed = messages.parse_device_message(bytes.fromhex(cases["good"]), "reading")
reasons = []
for name, data in cases["bad"]:
    try:
        messages.parse_device_message(bytes.fromhex(data), "reading")
        reasons.append("accepted")
    except ProtocolError as error:
        reasons.append(error.reason)
w = replay.ReplayWindow()
for s in (5, 3, 4):
    w.accept(2, s)
try:
    w.accept(2, 4)
    replayed = "accepted"
except ProtocolError as error:
    replayed = error.reason
print(json.dumps({"made": made.hex(), "seq": parsed.seq, "body": parsed.body, "reasons": reasons, "replayed": replayed}))
"""
    stdin = json.dumps({"id": DEVICE_ID, "good": _reading(seq=77).hex(), "bad": bad})
    result = json.loads(micropython(script, stdin=stdin))
    assert result["made"] == zero_signer_reading.hex()
    assert result["seq"] == 77 and result["body"] == [["temp", "Cel", 21.5]]
    expected = [reason for name, _, reason in _tamper_cases() if name != "flipped signature bit"]
    assert result["reasons"] == expected
    assert result["replayed"] == "replay"


def test_firmware_under_micropython_signs_what_pycose_and_pynacl_verify_and_verifies_pycose(micropython):
    """Readings, commands, acks and cards built by the firmware's own Ed25519 on the unix port are
    byte-identical to the PyNaCl-built examples (Ed25519 is deterministic) and verify with pycose;
    a message made by pycose verifies in the firmware codec on the unix port."""
    key = OKPKey(crv=Ed25519, d=examples.DEVICE_SEED, x=examples.DEVICE_KEY)
    made = Sign1Message(
        phdr={Algorithm: EdDSA, ContentType: 112}, payload=cbor.encode([{0: "temp", 2: 20.5}])
    )
    made.key = key
    pycose_bytes = made.encode(tag=True)
    script = """
import sys, json
from fp import ed25519, messages, cose, ids
data = json.loads(sys.stdin.read())
device = ed25519.SigningKey(bytes.fromhex(data["device_seed"]))
owner = ed25519.SigningKey(bytes.fromhex(data["owner_seed"]))
agent = ed25519.SigningKey(bytes.fromhex(data["agent_seed"]))
device_id = ids.id_from_public_key(device.public)
t = data["time"]
command = messages.encode_command(owner.sign, owner.public, device_id, 7, t, t + 300, "set-interval", {"sensor": "temp", "interval_s": 30})
parsed = messages.parse_command(command)
built = {
    "reading": messages.encode_reading(device.sign, device_id, 1, 1, [("temp", "Cel", 21.5)], t),
    "reading-no-time": messages.encode_reading(device.sign, device_id, 1, 2, [("temp", "Cel", 21.5)]),
    "command": command,
    "ack": messages.encode_ack(device.sign, device_id, 1, 3, parsed.digest(), 7, "applied", "", None, t),
    "card": messages.encode_card(device.sign, device.public, "esp32-devkitc", "0.1.0", t, ids.id_from_public_key(owner.public)),
    "status": messages.encode_status(device.sign, device_id, 1, 4, "online", {"buffered": 0, "dropped": 0}, t),
    "receipt": messages.encode_receipt(agent.sign, agent.public, device_id, t * 1000, [[1, 0, 4]], t),
}
foreign = messages.parse(bytes.fromhex(data["pycose"]), "reading")
cose.verify_sign1(foreign, device.public, ed25519.verify)
card = messages.parse_card(built["card"], ed25519.verify)
print(json.dumps({"built": {k: v.hex() for k, v in built.items()}, "card_id": card.device_id}))
"""
    stdin = json.dumps(
        {
            "device_seed": examples.DEVICE_SEED.hex(),
            "owner_seed": examples.OWNER_SEED.hex(),
            "agent_seed": examples.AGENT_SEED.hex(),
            "time": examples.TIME_S,
            "pycose": pycose_bytes.hex(),
        }
    )
    result = json.loads(micropython(script, stdin=stdin))
    expected = examples.build()
    assert result["card_id"] == DEVICE_ID
    for name, data in expected.items():
        assert result["built"][name] == data.hex(), name
    reading = bytes.fromhex(result["built"]["reading"])
    outer = cbor2.loads(reading)
    parts = list(outer.value)
    parts[1] = dict(parts[1])
    decoded = Sign1Message.from_cose_obj(parts, True)
    decoded.key = OKPKey(crv=Ed25519, x=examples.DEVICE_KEY)
    assert decoded.verify_signature()
    parsed = messages.parse_device_message(reading, "reading")
    cose.verify_sign1(parsed.message, examples.DEVICE_KEY, wire.nacl_verify)


def test_endorsement_lets_a_third_party_trust_a_device_key_through_its_owner():
    owner = wire.nacl_signer(examples.OWNER_SEED)
    data = messages.encode_endorsement(
        owner, examples.OWNER_KEY, examples.DEVICE_KEY, "owner", examples.TIME_S
    )
    for parse in (
        lambda d, k: messages.parse_endorsement(d, k, wire.nacl_verify),
        lambda d, k: messages.parse_endorsement(d, k, wire.nacl_verify),
    ):
        endorsement = parse(data, examples.OWNER_KEY)
        assert (endorsement.signer_id, endorsement.device_id, endorsement.device_key, endorsement.role) == (
            examples.OWNER_ID,
            DEVICE_ID,
            examples.DEVICE_KEY,
            "owner",
        )
    stranger_seed = bytes([5] * 32)
    with pytest.raises(ProtocolError) as error:
        messages.parse_endorsement(data, wire.nacl_public_key(stranger_seed), wire.nacl_verify)
    assert error.value.reason == "not-owner"
    forged = messages.encode_endorsement(
        wire.nacl_signer(stranger_seed), examples.OWNER_KEY, examples.DEVICE_KEY, "owner", examples.TIME_S
    )
    with pytest.raises(ProtocolError) as error:
        messages.parse_endorsement(forged, examples.OWNER_KEY, wire.nacl_verify)
    assert error.value.reason == "bad-signature"


def test_each_content_type_names_its_kind_and_each_kind_has_its_size_limit():
    """fp.inbound.KINDS is the one table of kinds (a const() tuple on a board): the host's content
    type names, KIND_OF and MAX_BYTES all come out of it as they were written before."""
    assert messages.KIND_OF == {
        messages.CT_READING: "reading",
        messages.CT_COMMAND: "command",
        messages.CT_ACK: "ack",
        messages.CT_CARD: "card",
        messages.CT_STATUS: "status",
        messages.CT_ENDORSEMENT: "endorsement",
        messages.CT_GRANT: "grant",
        messages.CT_RECEIPT: "receipt",
        messages.CT_PROFFER: "proffer",
        messages.CT_ANSWER: "answer",
        messages.CT_TERMINATION: "termination",
        messages.CT_TERMINATION_ACK: "termination-ack",
    }
    assert messages.MAX_BYTES == {
        "reading": 1024,
        "status": 512,
        "ack": 1024,
        "card": 512,
        "command": 4096,
        "endorsement": 512,
        "grant": 4096,
        "receipt": 512,
        "proffer": 4096,
        "answer": 1024,
        "termination": 1024,
        "termination-ack": 1024,
    }


def test_every_senml_label_the_board_writes_the_host_reads_back():
    """fp.senml (the board's encoder) and fp.senml_decode (the host's decoder) each hold RFC 8428's
    labels: a pack with every kind of value, with and without a unit, comes back as it went."""
    from fp import senml, senml_decode

    measurements = [
        ("temperature", "Cel", 21.5),
        ("count", None, 7),
        ("negative", "W", -3),
        ("state", None, "open"),
        ("alarm", None, True),
        ("quiet", "dB", False),
    ]
    assert senml_decode.decode_pack(senml.encode_pack(measurements)) == measurements
