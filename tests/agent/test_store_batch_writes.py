"""A batch's writes on both stores: the same rows whether one statement per row (SQLite) or one
statement over arrays (PostgreSQL's bulk paths, host_agent/store/postgres.py)."""

from __future__ import annotations

import pytest

from host_agent.store import open_store
from tests.agent.conftest import BOTH_STORES

pytestmark = BOTH_STORES


@pytest.fixture
def store(tmp_path, store_url):
    store = open_store(tmp_path / "firstparty.db", store_url)
    with store.transaction() as db:
        for device_id in ("dev-a", "dev-b", "dev-c"):
            db.add_device(device_id, b"k" * 32, b"card", None, "sim", "0.1.0", "accepted", 1.0, None)
    yield store
    store.close()


def test_a_batch_saves_its_replay_windows_and_replaces_the_ones_held(store):
    with store.transaction() as db:
        db.save_replay_windows([("dev-a", "reading", 1, 5, b"\x1f"), ("dev-b", "status", 2, 9, b"\x01\x00")])
    with store.transaction() as db:
        db.save_replay_windows([("dev-a", "reading", 1, 7, b"\x7f"), ("dev-c", "reading", 3, 1, b"\x01")])
    held = sorted((d, k, b, t, bytes(s)) for d, k, b, t, s in store.replay_windows())
    assert held == [
        ("dev-a", "reading", 1, 7, b"\x7f"),
        ("dev-b", "status", 2, 9, b"\x01\x00"),
        ("dev-c", "reading", 3, 1, b"\x01"),
    ]


def test_a_batch_marks_when_each_of_its_devices_was_last_seen_and_no_other(store):
    with store.transaction() as db:
        db.mark_seen([(100.5, "dev-a"), (101.25, "dev-c")])
    seen = dict(store.query("SELECT device_id, last_seen FROM devices"))
    assert seen == {"dev-a": 100.5, "dev-b": 1.0, "dev-c": 101.25}  # dev-b: when it was added


def test_delivered_forwards_are_marked_and_no_others(store):
    route = store.add_route(
        "r", {"destination": {"type": "file", "path": "/dev/null"}, "devices": ["*"], "metrics": ["*"]}, None
    )
    with store.transaction() as db:
        db.queue_forwards([(route, message_id, f"key-{message_id}", 0.0, 1.0) for message_id in (11, 12, 13)])
    ids = {key: i for i, key in store.query("SELECT id, idempotency_key FROM outbox")}
    store.mark_delivered([ids["key-11"], ids["key-13"]], "r", {})
    delivered = {
        key: at is not None for key, at in store.query("SELECT idempotency_key, delivered_at FROM outbox")
    }
    assert delivered == {"key-11": True, "key-12": False, "key-13": True}


def test_claimed_forwards_are_held_for_their_lease_and_no_others(store):
    route = store.add_route(
        "r", {"destination": {"type": "file", "path": "/dev/null"}, "devices": ["*"], "metrics": ["*"]}, None
    )
    with store.transaction() as db:
        db.queue_forwards([(route, message_id, f"key-{message_id}", 5.0, 1.0) for message_id in (21, 22, 23)])
        ids = {key: i for i, key in db.execute("SELECT id, idempotency_key FROM outbox").fetchall()}
        db.hold_until(65.0, [ids["key-21"], ids["key-23"]])
    held = dict(store.query("SELECT idempotency_key, next_at FROM outbox"))
    assert held == {"key-21": 65.0, "key-22": 5.0, "key-23": 65.0}
