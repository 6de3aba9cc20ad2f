"""The agreements table through the store (a real SQLite file): frozen records in, frozen records out."""

from __future__ import annotations

import dataclasses

import pytest

from host_agent.owner import Owner
from host_agent.store import open_store
from host_agent.store.records import AgreementRecord
from host_agent.terms import records, roster, signed
from host_agent.terms.signed import ProfferTerms
from host_agent.terms.view import AgreementView, describe

NONCE = bytes(range(16))


def _proffer(key: Owner) -> bytes:
    agreement = roster.load().get("service-only@1")
    body = ProfferTerms(
        agreement.id,
        agreement.version,
        agreement.digest,
        "vendor",
        None,
        ("*",),
        ("*",),
        "service",
        1000,
        2000,
        30,
        "",
    )
    return signed.encode_proffer(key, NONCE, 1000, body)


def test_the_store_keeps_an_agreement_as_a_frozen_record_and_a_step_changes_only_its_columns(tmp_path):
    store = open_store(tmp_path / "agent.db")
    key = Owner(tmp_path / "owner.key")
    data = _proffer(key)
    record = records.new(NONCE.hex(), "first", "", "", "proffered", data, key.owner_id)
    records.add(store, record, "terms-proffered")
    found = records.get(store, record.id)
    assert found == record and records.by_digest(store, signed.digest(data)) == record
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.state = "accepted"  # a record is not changed in place

    answer = signed.encode_answer(key, data, "accept", 1001, None, "")
    assert records.update(store, record.id, {"state": "terminated"}, "terms-terminated", "accepted") is None
    updated = records.update(
        store, record.id, {"state": "accepted", "answer": answer}, "terms-accepted", "proffered"
    )
    assert updated is not None and (updated.state, updated.answer) == ("accepted", answer)
    unchanged = (
        "id",
        "side",
        "peer",
        "route",
        "proffer",
        "termination",
        "termination_ack",
        "owner_id",
        "created",
    )
    assert all(getattr(updated, name) == getattr(record, name) for name in unchanged)
    assert updated.updated >= record.updated and records.get(store, record.id) == updated
    assert set(records.parse_record(records.record_bytes(updated))) == {"proffer", "answer"}

    view = describe(updated)
    assert (view["state"], view["decision"], view["owner_id"]) == ("accepted", "accept", key.owner_id)
    assert (view["agreement"], view["devices"], view["from_s"], view["proffered_s"]) == (
        "service-only@1",
        ["*"],
        1000,
        1000,
    )
    assert list(view) == [name for name in AgreementView.__annotations__ if name != "followed_by"]
    assert [e["kind"] for e in store.audit_entries(0, 10)] == ["terms-proffered", "terms-accepted"]
    assert store.audit_verify() is None
    store.close()


def test_a_record_from_a_driver_that_gives_memoryview_holds_bytes():
    row = (
        "id",
        "first",
        "",
        "",
        "proffered",
        memoryview(b"p"),
        memoryview(b"a"),
        None,
        None,
        "owner",
        1.0,
        2.0,
    )
    record = AgreementRecord.from_row(row)
    assert type(record.proffer) is bytes and type(record.answer) is bytes and record.termination is None
    assert record.columns() == ("id", "first", "", "", "proffered", b"p", b"a", None, None, "owner", 1.0, 2.0)
    assert record.parts() == {"proffer": b"p", "answer": b"a"}
