"""Receipts: range merging, coverage, the counters of a device message, receipt verification.

The pure parts run as one script under both interpreters (CPython with the firmware on the path,
and the MicroPython unix port), fed receipts that the agent's own code signed with PyNaCl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fp import cbor, cose, messages
from fp.errors import ProtocolError
from fp.receipts import Ranges
from host_agent.ingest.receipts import ReceiptBook
from host_agent.wire import nacl_public_key, nacl_signer, nacl_verify
from tests.helpers import FIRMWARE, micropython_binary, micropython_env
from tests.protocol import examples

AGENT_SEED = bytes(range(64, 96))
OTHER_SEED = bytes(range(96, 128))
AGENT_KEY = nacl_public_key(AGENT_SEED)
OTHER_DEVICE = "a" * 24

SCRIPT = r"""
import sys, json
from fp import ed25519, ids, messages
from fp.errors import ProtocolError
from fp.receipts import Ranges
cases = json.loads(sys.stdin.read())
out = {}
r = Ranges(4)
for boot, first, last in cases["adds"]:
    r.add(boot, first, last)
out["ranges"] = r.items
out["count"] = r.count
out["covers"] = [r.covers(b, s) for b, s in cases["queries"]]
small = Ranges(2)
for seq in (1, 3, 5, 7):
    small.add(1, seq)
out["bounded"] = [small.items, small.forgotten]
out["counters"] = [list(messages.counter_of(bytes.fromhex(m))) for m in cases["messages"]]
try:
    messages.counter_of(bytes.fromhex(cases["not_a_message"]))
    out["not_a_message"] = "accepted"
except ProtocolError as error:
    out["not_a_message"] = error.reason
key = bytes.fromhex(cases["key"])
key_id = ids.id_from_public_key(key)
verdicts = []
for data, last in cases["receipts"]:
    try:
        receipt = messages.parse_receipt(bytes.fromhex(data))
        messages.check_receipt(receipt, key, key_id, cases["device"], last, ed25519.verify)
        verdicts.append(["ok", receipt.counter, receipt.ranges])
    except ProtocolError as error:
        verdicts.append([error.reason])
out["verdicts"] = verdicts
print(json.dumps(out))
"""


def _receipt(counter=5, ranges=((1, 0, 9),), device=examples.DEVICE_ID, seed=AGENT_SEED, claims=None):
    data = messages.encode_receipt(
        nacl_signer(seed), nacl_public_key(seed), device, counter, [list(r) for r in ranges], 1764000000
    )
    if claims is None:
        return data
    message = cose.parse_sign1(data, 512)
    protected = dict(message.protected)
    protected[cose.H_CWT_CLAIMS] = {**message.claims, **claims}
    return cose.sign1(nacl_signer(seed), protected, message.payload)


def _raw_receipt(payload) -> bytes:
    """A receipt with any payload, correctly signed with the agent key."""
    claims = {
        messages.ISS: messages.id_from_public_key(AGENT_KEY),
        messages.AUD: examples.DEVICE_ID,
        messages.CTI: bytes(7) + b"\x09",
    }
    header = {cose.H_ALG: cose.ALG_EDDSA, cose.H_CONTENT_TYPE: messages.CT_RECEIPT, cose.H_CWT_CLAIMS: claims}
    return cose.sign1(nacl_signer(AGENT_SEED), header, cbor.encode(payload))


def _flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


RECEIPT_CASES = [
    ("good", _receipt(), 4, ["ok", 5, [[1, 0, 9]]]),
    ("two ranges, two boots", _receipt(6, ((1, 0, 3), (2, 0, 0))), 5, ["ok", 6, [[1, 0, 3], [2, 0, 0]]]),
    ("flipped signature bit", _flip_last_bit(_receipt()), 4, ["bad-signature"]),
    ("signed by another key", _receipt(seed=OTHER_SEED), 4, ["not-owner"]),
    ("for another device", _receipt(device=OTHER_DEVICE), 4, ["not-for-me"]),
    ("replayed (counter not above the last)", _receipt(5), 5, ["replay"]),
    ("stale (counter below the last)", _receipt(5), 900, ["replay"]),
    ("range first above last", _raw_receipt([[1, 9, 3]]), 0, ["malformed"]),
    ("no range", _raw_receipt([]), 0, ["malformed"]),
    ("17 ranges", _raw_receipt([[1, 2 * i, 2 * i] for i in range(17)]), 0, ["malformed"]),
    ("seq beyond 32 bits", _raw_receipt([[1, 0, 1 << 32]]), 0, ["malformed"]),
    ("range of text", _raw_receipt([["1", 0, 1]]), 0, ["malformed"]),
    ("payload a map", _raw_receipt({"r": [1, 0, 1]}), 0, ["malformed"]),
    ("extra claim", _receipt(claims={messages.SUB: examples.DEVICE_ID}), 0, ["malformed"]),
    ("a reading sent as a receipt", examples.build()["reading"], 0, ["wrong-kind"]),
    ("oversized", b"\xd2" + bytes(600), 0, ["oversized"]),
]


def _expected_and_input():
    adds = [[1, 0, 0], [1, 1, 4], [1, 7, 9], [1, 5, 6], [2, 0, 0], [0, 3, 3], [1, 20, 20], [3, 1, 2]]
    queries = [[1, 0], [1, 9], [1, 10], [2, 0], [2, 1], [0, 3], [3, 2], [1, 20]]
    built = examples.build()
    kinds = ["reading", "reading-no-time", "ack", "status"]
    inputs = {
        "adds": adds,
        "queries": queries,
        "messages": [built[k].hex() for k in kinds],
        "not_a_message": built["card"].hex(),  # no cti
        "key": AGENT_KEY.hex(),
        "device": examples.DEVICE_ID,
        "receipts": [[data.hex(), last] for _, data, last, _ in RECEIPT_CASES],
    }
    expected = {
        # the fifth range ([3, 1, 2]) made the oldest ([0, 3, 3]) go, to stay within 4 ranges
        "ranges": [[1, 0, 9], [1, 20, 20], [2, 0, 0], [3, 1, 2]],
        "count": 1 + 4 + 3 + 2 + 1 + 1 + 1 + 2,
        "covers": [True, True, False, True, False, False, True, True],
        "bounded": [[[1, 5, 5], [1, 7, 7]], 2],
        "counters": [[1, 1], [1, 2], [1, 3], [1, 4]],
        "not_a_message": "malformed",
        "verdicts": [verdict for _, _, _, verdict in RECEIPT_CASES],
    }
    return inputs, expected


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_ranges_coverage_counters_and_receipt_checks_agree_under_both_interpreters(interpreter, tmp_path):
    inputs, expected = _expected_and_input()
    if interpreter == "cpython":
        command, env = [sys.executable, "-c", SCRIPT], dict(os.environ, PYTHONPATH=str(FIRMWARE))
    else:
        command, env = [micropython_binary(), "-c", SCRIPT], micropython_env()
    result = subprocess.run(
        command, cwd=tmp_path, env=env, input=json.dumps(inputs), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    for key, value in expected.items():
        if key == "verdicts":
            for (name, *_), verdict, want in zip(RECEIPT_CASES, got[key], value, strict=True):
                assert verdict == want, name
        else:
            assert got[key] == value, key


def test_counters_of_every_device_message_match_the_full_parse():
    built = examples.build()
    for kind, name in (
        ("reading", "reading"),
        ("reading", "reading-no-time"),
        ("ack", "ack"),
        ("status", "status"),
    ):
        parsed = messages.parse_device_message(built[name], kind)
        assert messages.counter_of(built[name]) == (parsed.boot, parsed.seq)
    # large counters and a long reading: the protected header's length does not matter
    long_reading = messages.encode_reading(
        nacl_signer(examples.DEVICE_SEED),
        examples.DEVICE_ID,
        0xFFFFFFFF,
        0xFFFFFFFE,
        [("t", "Cel", 1.0)] * 30,
    )
    assert messages.counter_of(long_reading) == (0xFFFFFFFF, 0xFFFFFFFE)


def test_ranges_merge_out_of_order_adds_and_overlaps_into_one():
    ranges = Ranges()
    for seq in (5, 3, 4, 0, 2, 1, 9, 6, 8, 7, 7):
        ranges.add(1, seq)
    assert ranges.items == [[1, 0, 9]]
    ranges.add(1, 4, 12)
    assert ranges.items == [[1, 0, 12]]


def test_agent_receipt_book_batches_per_count_or_interval_and_signs_what_the_device_accepts(tmp_path):
    book = ReceiptBook(tmp_path / "receipt.key", every=4, interval_s=1.0)
    assert (tmp_path / "receipt.key").stat().st_mode & 0o777 == 0o600
    device = examples.DEVICE_ID
    due = [book.committed(device, 1, seq, 100.0) for seq in range(4)]
    assert due == [False, False, False, True]
    [(topic, data)] = book.sign(book.take(100.0, [device]))
    assert topic == f"fp/v1/{device}/receipt"
    receipt = messages.parse_receipt(data)
    messages.check_receipt(receipt, book.public, book.key_id, device, 0, nacl_verify)
    assert receipt.ranges == [[1, 0, 3]]
    # fewer than `every`: held until the interval has passed since the first
    book.committed(device, 1, 4, 200.0)
    assert book.take(200.5) == []
    [(_, later)] = book.sign(book.take(201.0))
    second = messages.parse_receipt(later)
    assert second.ranges == [[1, 4, 4]] and second.counter > receipt.counter
    # the same key again after a restart (the file is kept), a readable key file is refused
    assert ReceiptBook(tmp_path / "receipt.key").public == book.public
    (tmp_path / "receipt.key").chmod(0o644)
    with pytest.raises(Exception, match="readable by others"):
        ReceiptBook(tmp_path / "receipt.key")


def test_receipts_are_counted_when_taken_and_signed_later_with_those_counters(tmp_path):
    """The agent takes due receipts on its event loop and signs them in a worker thread: the
    counters follow the order of taking, whatever is committed between taking and signing."""
    book = ReceiptBook(tmp_path / "receipt.key", every=2, interval_s=1.0)
    first, second = examples.DEVICE_ID, "b" * 24
    for device in (first, second):
        book.committed(device, 1, 0, 100.0)
        book.committed(device, 1, 1, 100.0)
    taken = book.take(100.0, [second, first])
    book.committed(first, 1, 2, 100.5)  # a commit before the signing: in the next receipt
    counter = book.counter
    signed = book.sign(taken)
    assert book.counter == counter  # signing takes no counter
    receipts = [messages.parse_receipt(data) for _, data in signed]
    assert [topic for topic, _ in signed] == [f"fp/v1/{second}/receipt", f"fp/v1/{first}/receipt"]
    assert receipts[0].counter < receipts[1].counter == counter
    for device, receipt in zip([second, first], receipts, strict=True):
        messages.check_receipt(receipt, book.public, book.key_id, device, 0, nacl_verify)
        assert receipt.ranges == [[1, 0, 1]]
    [(_, later)] = book.sign(book.take(101.5))
    assert messages.parse_receipt(later).ranges == [[1, 2, 2]]
    assert messages.parse_receipt(later).counter > counter


def test_receipt_refused_by_the_host_codec_with_the_same_reasons():
    for name, data, last, verdict in RECEIPT_CASES:
        try:
            receipt = messages.parse_receipt(data)
            messages.check_receipt(
                receipt,
                AGENT_KEY,
                messages.id_from_public_key(AGENT_KEY),
                examples.DEVICE_ID,
                last,
                nacl_verify,
            )
            got = ["ok", receipt.counter, receipt.ranges]
        except ProtocolError as error:
            got = [error.reason]
        assert got == verdict, name
