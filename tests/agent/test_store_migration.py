"""A store made by 0.1.0 opens in this version with every row kept, and then behaves like a new one."""

from __future__ import annotations

import sqlite3

from fp.replay import ReplayWindow
from host_agent.ingest.intake import Ingest
from host_agent.store.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.agent.conftest import FakeDevice

# the two tables as 0.1.0 created them (schema version 0); the other tables did not change
SCHEMA_0_1_0 = """
CREATE TABLE messages (
  id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, kind TEXT NOT NULL, boot INTEGER, seq INTEGER,
  time_s INTEGER, received_s REAL, digest BLOB NOT NULL UNIQUE, raw BLOB NOT NULL, body TEXT,
  metrics TEXT, held INTEGER NOT NULL DEFAULT 0);
CREATE INDEX messages_device ON messages (device_id, kind, id);
CREATE UNIQUE INDEX messages_counter ON messages (device_id, kind, boot, seq);
CREATE TABLE outbox (
  id INTEGER PRIMARY KEY, route_id INTEGER NOT NULL, message_id INTEGER NOT NULL,
  idempotency_key TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
  delivered_at REAL, last_error TEXT, UNIQUE (route_id, idempotency_key));
CREATE INDEX outbox_due ON outbox (delivered_at, next_at);
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;
"""


def _old_store(path, device: FakeDevice, raw: bytes) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_0_1_0)
    db.execute(
        "INSERT INTO messages VALUES (1, ?, 'reading', 1, 1, 0, 0, ?, ?, '[[\"t\",\"Cel\",21.5]]', ',t,', 0)",
        (device.device_id, b"d" * 32, raw),
    )
    db.execute("INSERT INTO outbox (route_id, message_id, idempotency_key, next_at) VALUES (1, 1, 'k', 0)")
    db.commit()
    db.close()


def test_a_0_1_0_store_keeps_its_rows_and_takes_the_new_schema(tmp_path, device: FakeDevice):
    path = tmp_path / "firstparty.db"
    raw = device.reading(seq=1)
    _old_store(path, device, raw)

    store = SQLiteStore(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    columns = [row[1] for row in store.db.execute("PRAGMA table_info(messages)")]
    assert "digest" not in columns
    assert store.query("SELECT id, device_id, raw, body FROM messages") == [
        (1, device.device_id, raw, '[["t","Cel",21.5]]')
    ]
    assert store.query("SELECT route_id, message_id, idempotency_key, delivered_at FROM outbox") == [
        (1, 1, "k", None)
    ]
    indexes = {row[0] for row in store.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"messages_device", "messages_counter", "outbox_due", "outbox_pending"} <= indexes
    # a forward is queued once per (route, message) now
    with store.transaction() as db:
        db.execute(
            "INSERT OR IGNORE INTO outbox (route_id, message_id, idempotency_key, next_at) VALUES (1,1,'x',0)"
        )
    assert store.query("SELECT COUNT(*) FROM outbox")[0][0] == 1
    store.close()

    # opened again: nothing to do, nothing lost
    store = SQLiteStore(path)
    assert store.query("SELECT COUNT(*) FROM messages")[0][0] == 1
    store.close()


def test_readings_keep_no_copy_of_their_values_and_read_them_from_the_signed_bytes(tmp_path, device):
    path = tmp_path / "firstparty.db"
    _old_store(path, device, device.reading(seq=1))  # a row with the JSON copy an older agent wrote
    store = SQLiteStore(path)
    ingest = Ingest(store, auto_accept=True)
    ingest.process([(device.topic("card"), device.card())])
    raw = device.reading((("temp", "Cel", 22.25), ("door", None, True), ("mode", None, "eco")), seq=2)
    assert [o.reason for o in ingest.process([(device.topic("reading"), raw)])] == [None]
    assert store.query("SELECT body FROM messages WHERE seq=2") == [(None,)]
    readings = store.readings()
    assert [r["values"] for r in readings] == [
        [{"n": "t", "u": "Cel", "v": 21.5}],
        [
            {"n": "temp", "u": "Cel", "v": 22.25},
            {"n": "door", "u": None, "v": True},
            {"n": "mode", "u": None, "v": "eco"},
        ],
    ]
    assert readings[1]["message_hex"] == raw.hex()
    store.close()


def test_a_redelivery_is_told_from_a_replay_by_the_bytes_stored_under_its_counters(tmp_path, device):
    store = SQLiteStore(tmp_path / "firstparty.db")
    ingest = Ingest(store, auto_accept=True)
    ingest.process([(device.topic("card"), device.card())])
    first = device.reading(seq=1)
    other = device.reading((("temp", "Cel", 30.0),), seq=1)  # the same counters, other bytes

    in_batch = ingest.process([(device.topic("reading"), first), (device.topic("reading"), first)])
    assert [o.reason for o in in_batch] == [None, "duplicate"]
    later = ingest.process([(device.topic("reading"), first), (device.topic("reading"), other)])
    assert [o.reason for o in later] == ["duplicate", "replay"]

    # a window that has seen seq 1 and the four after it: the bytes in the store still decide
    ingest.windows[(device.device_id, "reading")] = ReplayWindow(1, 5, 0b11111)
    again = ingest.process([(device.topic("reading"), first), (device.topic("reading"), other)])
    assert [o.reason for o in again] == ["duplicate", "replay"]
    assert store.query("SELECT COUNT(*) FROM messages WHERE kind='reading'")[0][0] == 1
    store.close()
