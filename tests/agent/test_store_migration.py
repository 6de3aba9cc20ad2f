"""A store made by 0.1.0 (SQLite), or by the version before this one (both stores), opens in this
version with every row kept, and then behaves like a new one; one made by a newer version is refused."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import psycopg
import pytest

from fp.replay import ReplayWindow
from host_agent.ingest.intake import Ingest
from host_agent.routes import rules as routing
from host_agent.store import open_store
from host_agent.store.dialect import POSTGRES, SQLITE
from host_agent.store.schema import MIGRATIONS, SCHEMA, NewerSchema, statements
from host_agent.store.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.agent.conftest import BOTH_STORES, FakeDevice, agent_toml, api, serve_process, wait_for

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


# --- the version before this one, and a version after it, on both stores ------------------------


def _rows_as_ingest_writes_them(
    tmp_path, device: FakeDevice, readings: list[bytes], forwards_to: Path
) -> dict[str, list[tuple]]:
    """The rows ingest writes (a device, its windows, its readings, and their forwards on a route
    to a file, still waiting), from this version's ingest into a scratch store, in the columns the
    version before this one has: version 7 added the outbox's received_s, which is left out."""
    scratch = SQLiteStore(tmp_path / "scratch.db")
    scratch.add_route(
        "file", routing.validate({"destination": {"type": "file", "path": str(forwards_to)}}), None
    )
    ingest = Ingest(scratch, auto_accept=True)
    ingest.process([(device.topic("card"), device.card())])
    assert [o.reason for o in ingest.process([(device.topic("reading"), raw) for raw in readings])] == [
        None
    ] * len(readings)
    rows = {
        table: scratch.query(f"SELECT * FROM {table}")
        for table in ("devices", "replay", "messages", "routes")
    }
    rows["outbox"] = scratch.query(
        "SELECT id, route_id, message_id, idempotency_key, attempts, next_at, delivered_at, last_error FROM outbox"
    )
    assert len(rows["outbox"]) == len(readings)
    scratch.close()
    return rows


def _database_at(version: int, store_url: str | None, path, rows: dict[str, list[tuple]]) -> None:
    """A store made by the agent of schema `version`: its statements (SCHEMA, then MIGRATIONS up to
    `version`), its version mark, and `rows`."""
    scripts = [SCHEMA, *(script for step, script in MIGRATIONS if step <= version)]
    inserts = [
        (f"INSERT INTO {table} VALUES ({','.join('?' * len(values[0]))})", values)
        for table, values in rows.items()
        if values
    ]
    if store_url is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
        for script in scripts:
            db.executescript(SQLITE.schema(script))
        for sql, values in inserts:
            db.executemany(sql, values)
        db.execute(f"PRAGMA user_version={version}")
        db.commit()
        db.close()
        return
    with psycopg.connect(store_url, autocommit=True) as db:
        for script in scripts:
            for statement in statements(POSTGRES.schema(script)):
                db.execute(statement)
        for sql, values in inserts:
            db.cursor().executemany(POSTGRES.sql(sql), values)
        # that agent's ingest took the ids from the sequence
        db.execute("SELECT setval('messages_id_seq', (SELECT MAX(id) FROM messages))")
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (%s)", (version,))


def _schema_version(store) -> int:
    if store.dialect.name == "sqlite":
        return store.query("PRAGMA user_version")[0][0]
    return store.query("SELECT MAX(version) FROM schema_version")[0][0]


@BOTH_STORES
def test_a_store_of_the_previous_schema_version_is_upgraded_keeps_its_readings_and_works(
    tmp_path, start_agent, publisher, device, store_url
):
    previous = SCHEMA_VERSION - 1
    old = [device.reading((("temp", "Cel", float(v)),)) for v in (20, 21)]
    forwarded = tmp_path / "forwards.jsonl"
    _database_at(
        previous,
        store_url,
        tmp_path / "agent" / "firstparty.db",
        _rows_as_ingest_writes_them(tmp_path, device, old, forwarded),
    )

    agent = start_agent()
    assert _schema_version(agent.store) == SCHEMA_VERSION
    reader = api(agent)
    assert [bytes.fromhex(r["message_hex"]) for r in reader.get("/readings").json()["items"]] == old
    assert agent.store.device(device.device_id).state == "accepted"
    # the forwards that were waiting found their readings (version 7: by id and received_s)
    wait_for(lambda: forwarded.exists() and len(forwarded.read_text().splitlines()) == 2, 10, "forwarded")
    # the replay windows came along: the old bytes again are a duplicate; the next counter is new
    publisher.publish(device.topic("reading"), old[0])
    new = device.reading((("temp", "Cel", 22.0),))
    publisher.publish(device.topic("reading"), new)
    wait_for(lambda: agent.store.count_readings() == 3, 10, "the new reading stored")
    time.sleep(0.3)  # the duplicate, published before it, was handled before it: no second copy
    assert [bytes.fromhex(r["message_hex"]) for r in reader.get("/readings").json()["items"]] == [*old, new]
    # version 4's tables: the console's index takes in the old readings with the new one
    series = f"/devices/{device.device_id}/series"
    everything = {"metric": "temp", "since_s": 1764000000 - 60, "until_s": 1764000000 + 60}
    wait_for(lambda: sum(reader.get(series, params=everything).json()["count"]) == 3, 10, "indexed")
    assert reader.get(series, params=everything).json()["max"] == [22.0]


def _database_of_a_newer_agent(store_url: str | None, path) -> None:
    store = open_store(path, store_url)
    store.close()
    if store_url is None:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE from_the_future (x INTEGER)")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        db.commit()
        db.close()
    else:
        with psycopg.connect(store_url, autocommit=True) as db:
            db.execute("CREATE TABLE from_the_future (x INTEGER)")
            db.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION + 1,))


def _what_is_there(store_url: str | None, path) -> list:
    if store_url is None:
        db = sqlite3.connect(path)
        try:
            return [
                db.execute("PRAGMA user_version").fetchall(),
                db.execute("SELECT * FROM sqlite_master").fetchall(),
            ]
        finally:
            db.close()
    with psycopg.connect(store_url, autocommit=True) as db:
        return [
            db.execute("SELECT version FROM schema_version ORDER BY version").fetchall(),
            db.execute(
                "SELECT relname FROM pg_class WHERE relnamespace='public'::regnamespace ORDER BY relname"
            ).fetchall(),
        ]


@BOTH_STORES
def test_a_store_of_a_newer_schema_version_is_refused_with_a_clear_error_and_left_unchanged(
    tmp_path, store_url
):
    path = tmp_path / "agent" / "firstparty.db"
    path.parent.mkdir(mode=0o700)
    _database_of_a_newer_agent(store_url, path)
    before = _what_is_there(store_url, path)

    with pytest.raises(
        NewerSchema, match=f"schema version {SCHEMA_VERSION + 1}, newer than this agent's {SCHEMA_VERSION}"
    ):
        open_store(path, store_url)
    assert _what_is_there(store_url, path) == before

    # and `firstparty serve` says so in one line, exit status 2
    settings = {
        "data_dir": str(tmp_path / "agent"),
        "api": {"port": 0},
        "broker": {"embedded": False, "port": 1},
    }
    if store_url is not None:
        settings["store"] = {"url": store_url}
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml(settings))
    serve = serve_process(config, tmp_path / "serve.log")
    assert serve.wait(30) == 2
    lines = (tmp_path / "serve.log").read_text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "newer than this agent's" in lines[0], lines
    assert _what_is_there(store_url, path) == before
