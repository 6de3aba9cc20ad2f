"""One accept/reject core: the agent's ingest and an in-memory recipient (the Verifier behind
`firstparty verify`, the demo and the tests' devices) give every message the same verdict."""

from __future__ import annotations

import os

import pytest

from fp import replay, topics
from fp.errors import ProtocolError
from host_agent.ingest import verifier
from host_agent.ingest.intake import Ingest
from host_agent.store import open_store
from host_agent.store.sqlite import SQLiteStore
from tests.agent.conftest import BOTH_STORES, FakeDevice


def _stream(device: FakeDevice) -> list[tuple[str, bytes]]:
    """A genuine card and reading, then one message of every kind of refusal a topic can carry."""
    other = FakeDevice(os.urandom(32))
    forged = FakeDevice(os.urandom(32))
    forged.device_id = device.device_id  # claims the device's id, signs with another key
    genuine = device.reading()
    return [
        (device.topic("card"), device.card()),
        (device.topic("reading"), genuine),
        (device.topic("reading"), genuine),  # duplicate: the same bytes again
        (device.topic("reading"), device.reading(values=[("temp", "Cel", 99.0)], seq=0)),  # replay
        (device.topic("reading"), forged.reading(seq=100)),  # bad-signature
        (device.topic("reading"), b"\xd2\x84garbage"),  # malformed
        (topics.topic(other.device_id, "reading"), device.reading()),  # wrong-topic: signer
        (other.topic("reading"), other.reading()),  # unknown-device
        (device.topic("command"), genuine),  # wrong-kind
        ("fp/v1/not-an-id/reading", genuine),  # wrong-topic: no device id
        (other.topic("card"), device.card()),  # wrong-topic: someone else's card
    ]


EXPECTED = [
    None,
    None,
    "duplicate",
    "replay",
    "bad-signature",
    "malformed",
    "wrong-topic",
    "unknown-device",
    "wrong-kind",
    "wrong-topic",
    "wrong-topic",
]


def _verdict(recipient: verifier.Verifier, topic: str, data: bytes) -> str | None:
    try:
        if topic.endswith("/card"):
            recipient.learn_card(data, topic)
        else:
            recipient.check(topic, data)
    except ProtocolError as error:
        return error.reason
    return None


def test_ingest_and_an_in_memory_recipient_refuse_the_same_messages_for_the_same_reasons(tmp_path):
    device = FakeDevice(os.urandom(32))
    stream = _stream(device)
    store = SQLiteStore(tmp_path / "agent.db")
    try:
        ingest = Ingest(store, auto_accept=True)
        by_ingest = [outcome.reason for outcome in ingest.process(list(stream[:1]))]
        by_ingest += [ingest.process([item])[0].reason for item in stream[1:]]
    finally:
        store.close()
    recipient = verifier.Verifier()
    by_verifier = [_verdict(recipient, topic, data) for topic, data in stream]
    assert by_ingest == EXPECTED
    assert by_verifier == EXPECTED


def test_same_counters_with_other_bytes_are_a_replay_and_the_same_bytes_a_duplicate():
    device = FakeDevice(os.urandom(32))
    first = device.reading(seq=5)
    other = device.reading(values=[("temp", "Cel", 1.0)], seq=5)
    message = verifier.open_message(device.device_id, "reading", first)
    window = replay.ReplayWindow()
    verifier.admit_counters(window, message, first, lambda: None)
    held = verifier.digest(first)
    with pytest.raises(ProtocolError) as again:
        verifier.admit_counters(window, message, first, lambda: held)
    assert again.value.reason == "duplicate"
    other_message = verifier.open_message(device.device_id, "reading", other)
    with pytest.raises(ProtocolError) as replayed:
        verifier.admit_counters(window, other_message, other, lambda: held)
    assert replayed.value.reason == "replay"


def test_a_counter_behind_the_window_is_accepted_only_where_the_store_is_the_authority_and_lacks_it():
    device = FakeDevice(os.urandom(32))
    late = device.reading(seq=0)
    message = verifier.open_message(device.device_id, "reading", late)
    window = replay.ReplayWindow(device.boot, replay.WINDOW + 10, 1)
    with pytest.raises(ProtocolError) as refused:
        verifier.admit_counters(window, message, late, lambda: None)
    assert refused.value.reason == "replay"
    verifier.admit_counters(window, message, late, lambda: None, is_store_authority=True)
    with pytest.raises(ProtocolError) as held:
        verifier.admit_counters(window, message, late, lambda: b"\x00" * 32, is_store_authority=True)
    assert held.value.reason == "replay"


def test_a_batch_checked_before_its_device_was_rejected_is_refused_when_it_commits(tmp_path):
    """The agent checks a batch while the last one commits (host_agent.service): an owner's reject
    that comes between the check and the commit of a batch still refuses its readings."""
    device = FakeDevice(os.urandom(32))
    store = SQLiteStore(tmp_path / "agent.db")
    try:
        ingest = Ingest(store, auto_accept=True)
        ingest.process([(device.topic("card"), device.card())])
        before, after = (ingest.check([(device.topic("reading"), device.reading())]) for _ in range(2))
        assert [o.reason for o in ingest.commit(before)] == [None]
        store.set_state(device.device_id, "rejected")
        ingest.device_state_changed(device.device_id, "rejected")
        assert [o.reason for o in ingest.commit(after)] == ["unknown-device"]
        assert store.count_readings() == 1
    finally:
        store.close()


def test_a_rejected_device_and_a_device_without_a_card_are_unknown_signers():
    device = FakeDevice(os.urandom(32))
    message = verifier.open_message(device.device_id, "reading", device.reading())
    for key, is_rejected in ((None, False), (device.public, True)):
        with pytest.raises(ProtocolError) as refused:
            verifier.check_signer(message, key, is_rejected=is_rejected)
        assert refused.value.reason == "unknown-device"
    verifier.check_signer(message, device.public)


@BOTH_STORES
def test_a_shared_batch_reads_the_replay_windows_of_more_devices_than_one_read_holds(tmp_path, store_url):
    """In a $share/ group the windows of a batch's devices are read in one statement per 500 ids
    (store.base.READ_CHUNK): past the first chunk too, a replayed reading is still refused."""
    devices = [FakeDevice(os.urandom(32)) for _ in range(1_100)]
    store = open_store(tmp_path / "agent.db", store_url)
    try:
        ingest = Ingest(store, auto_accept=True, shared=True)
        assert {o.reason for o in ingest.process([(d.topic("card"), d.card()) for d in devices])} == {None}
        first = [(d.topic("reading"), d.reading()) for d in devices]
        assert {o.reason for o in ingest.process(first)} == {None}
        ingest.windows.clear()  # as another agent of the group would be: only the store knows them
        replayed = [(d.topic("reading"), d.reading(values=[("temp", "Cel", 1.0)], seq=0)) for d in devices]
        assert {o.reason for o in ingest.process(replayed)} == {"replay"}
        assert store.count_readings() == len(devices)
    finally:
        store.close()
