"""Update messages (fp.ota, docs/protocol.md section 13) and the sender's decisions (host_agent.updates.sender):
what the device refuses as junk, and which message the sender sends for each reported state."""

from __future__ import annotations

import hashlib

import pytest

from fp import cbor, ota
from fp.errors import ProtocolError
from host_agent.updates.sender import Release, Sender, summary

FILES = (b"a" * 5000, b"", b"b" * 10)


def release_of(files=FILES) -> Release:
    return Release(b"manifest bytes", b"approval", files, (1, 2, 3))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        cbor.encode({"kind": 1}),
        cbor.encode([]),
        cbor.encode([9]),
        cbor.encode([1, "text", None]),
        cbor.encode([1, b"m"]),
        cbor.encode([2, -1, 0, b"x", b"h"]),
        cbor.encode([2, 0, True, b"x", b"h"]),
        cbor.encode([2, 0, 0, b"x" * (ota.MAX_CHUNK_BYTES + 1), b"h"]),
        cbor.encode([3, 0]),
    ],
)
def test_a_malformed_update_message_is_refused_with_a_reason(data):
    with pytest.raises(ProtocolError) as refused:
        ota.parse_message(data)
    assert refused.value.reason in ("malformed", "oversized")


def test_update_messages_round_trip():
    assert ota.parse_message(ota.encode_offer(b"m", None)) == (ota.OFFER, [b"m", None])
    assert ota.parse_message(ota.encode_chunk(2, 4096, b"xyz")) == (
        ota.CHUNK,
        [2, 4096, b"xyz", hashlib.sha256(b"xyz").digest()],
    )
    assert ota.parse_message(ota.encode_commit()) == (ota.COMMIT, [])


def test_the_sender_offers_until_the_device_reports_a_transfer_of_its_release():
    release = release_of()
    sender = Sender(release)
    offer = ota.encode_offer(release.manifest, release.approval)
    assert sender.next_message(None) == offer
    # a stale refusal of the same release, from before this sender offered: offer again
    assert (
        Sender(release).next_message({"state": "refused", "reason": "tampered", "release": release.tag})
        == offer
    )
    assert sender.next_message({"state": "receiving", "release": "another", "file": 0, "offset": 0}) == offer


def test_the_sender_sends_the_chunk_the_status_asks_for_then_the_commit():
    release = release_of()
    sender = Sender(release, chunk_bytes=2048)
    sender.next_message(None)
    at = {"state": "receiving", "release": release.tag}
    assert sender.next_message(dict(at, file=0, offset=4096)) == ota.encode_chunk(0, 4096, b"a" * 904)
    assert sender.next_message(dict(at, file=1, offset=0)) == ota.encode_chunk(1, 0, b"")
    assert sender.next_message(dict(at, file=3, offset=0)) == ota.encode_commit()
    assert sender.next_message(dict(at, file=7, offset=0)) == ota.encode_offer(
        release.manifest, release.approval
    )


def test_the_sender_stops_at_the_devices_verdict():
    release = release_of()
    sender = Sender(release)
    sender.next_message(None)
    assert sender.next_message({"state": "refused", "reason": "not-approved", "release": release.tag}) is None
    assert sender.outcome == "refused:not-approved"
    done = Sender(release)
    assert done.next_message({"state": "installed-on-probation", "release": release.tag}) is None
    assert done.outcome == "installed-on-probation"


def test_the_update_state_in_one_word():
    assert summary(None) == "idle"
    assert summary({"state": "receiving", "received": 10, "total": 20}) == "receiving 10 of 20"
    assert summary({"state": "refused", "reason": "wrong-arch"}) == "refused:wrong-arch"
    assert summary({"state": "confirmed"}) == "confirmed"
    assert summary({"state": "something else"}) == "idle"
