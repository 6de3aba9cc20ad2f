"""The store's tables, written once for both backends (host_agent.store.dialect renders them).

`SCHEMA` is version 2 in SQLite's words; `MIGRATIONS` are the steps after it, in order, applied by
both backends (SQLite counts in PRAGMA user_version, PostgreSQL in the schema_version table).
"""

from __future__ import annotations

from host_agent.errors import UserError

__all__ = ["MIGRATIONS", "SCHEMA", "SCHEMA_VERSION", "NewerSchema"]

# Version 2 dropped messages.digest and its UNIQUE index (the same bytes have the same counters,
# which messages_counter holds: a redelivery is told from a replay by comparing the bytes stored
# under them) and keys the outbox by (route, message) instead of (route, idempotency key): both
# indexes were written at random places, so each commit copied a page per reading to the WAL
# (docs/benchmarks.md, "Host agent").
SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
  device_id TEXT PRIMARY KEY, public_key BLOB NOT NULL, card BLOB NOT NULL, owner_id TEXT,
  name TEXT, board TEXT, firmware TEXT, state TEXT NOT NULL, first_seen REAL, last_seen REAL,
  last_status TEXT, card_time_s INTEGER);
CREATE TABLE IF NOT EXISTS replay (
  device_id TEXT, kind TEXT, boot INTEGER, top INTEGER, seen BLOB, PRIMARY KEY (device_id, kind));
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, kind TEXT NOT NULL, boot INTEGER, seq INTEGER,
  time_s INTEGER, received_s REAL, raw BLOB NOT NULL, body TEXT,
  metrics TEXT, held INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS messages_device ON messages (device_id, kind, id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_counter ON messages (device_id, kind, boot, seq);
CREATE TABLE IF NOT EXISTS rejections (
  id INTEGER PRIMARY KEY, at REAL, reason TEXT, topic TEXT, device_id TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS routes (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, created REAL,
  active INTEGER NOT NULL DEFAULT 1, grant_bytes BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS routes_active_name ON routes (name) WHERE active=1;
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY, route_id INTEGER NOT NULL, message_id INTEGER NOT NULL,
  idempotency_key TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
  delivered_at REAL, last_error TEXT, UNIQUE (route_id, message_id));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, next_at);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS tokens (
  id INTEGER PRIMARY KEY, token_hash TEXT UNIQUE NOT NULL, name TEXT, scope TEXT NOT NULL,
  devices TEXT, metrics TEXT, account TEXT, created REAL, revoked REAL);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL,
  prev TEXT NOT NULL, hash TEXT NOT NULL);
"""

# (version, statements): each brings a store of the version before up to this one.
MIGRATIONS: list[tuple[int, str]] = [
    # 3: the agreements (host_agent.terms.records), which the terms desk used to create itself
    (
        3,
        """
CREATE TABLE IF NOT EXISTS agreements (
  id TEXT PRIMARY KEY, side TEXT NOT NULL, peer TEXT NOT NULL, route TEXT NOT NULL,
  state TEXT NOT NULL, proffer BLOB NOT NULL, proffer_digest BLOB NOT NULL, answer BLOB,
  termination BLOB, termination_ack BLOB, owner_id TEXT NOT NULL, created REAL, updated REAL);
CREATE INDEX IF NOT EXISTS agreements_route ON agreements (route, side);
CREATE UNIQUE INDEX IF NOT EXISTS agreements_digest ON agreements (proffer_digest);
""",
    ),
    # 4: the console's tables, which it used to create itself: the series index of every numeric
    # value, keyed (device, metric, t), its hourly sums and its cursor (host_agent.store.timeseries);
    # the one-time sign-in links; the pending devices' index
    (
        4,
        """
CREATE TABLE IF NOT EXISTS series (
  device_id TEXT NOT NULL, metric TEXT NOT NULL, t REAL NOT NULL, message_id INTEGER NOT NULL,
  v REAL NOT NULL, PRIMARY KEY (device_id, metric, t, message_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series_hour (
  device_id TEXT NOT NULL, metric TEXT NOT NULL, hour INTEGER NOT NULL, n INTEGER NOT NULL,
  total REAL NOT NULL, low REAL NOT NULL, high REAL NOT NULL, first_t REAL NOT NULL,
  PRIMARY KEY (device_id, metric, hour)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series_state (
  id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1), last_message_id INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS devices_state ON devices (state, device_id);
CREATE TABLE IF NOT EXISTS console_links (
  code_hash TEXT PRIMARY KEY, token_hash TEXT NOT NULL, expires_s REAL NOT NULL);
""",
    ),
    # 5: a device's readings of a time range (GET /readings?since_s&until_s, by the time they were
    # signed) are one index range: through messages_device they were every reading of the device,
    # filtered (1e4 of a device's readings read for 100, bench/bench_pg_indexes.py). PostgreSQL's
    # (device_id, received_s), which no query used, goes.
    (
        5,
        """
CREATE INDEX IF NOT EXISTS messages_signed_time ON messages (device_id, kind, (COALESCE(time_s, received_s)));
DROP INDEX IF EXISTS messages_time;
""",
    ),
    # 6: a device's row and its replay windows are rewritten at each of its readings (last_seen; the
    # window's top and bitmap). In PostgreSQL an update whose page has no room writes the new row on
    # another page and an entry in each of the table's indexes; half-empty pages keep it beside the
    # old one (a "HOT" update, no index touched), and the old one's room is taken back as the page
    # is next read. Measured in bench/bench_postgres.py's scenario: a device's last_seen 21.6 -> 8.7
    # us of PostgreSQL a reading (docs/benchmarks.md). Storage parameters are PostgreSQL's: SQLite's
    # dialect leaves these statements out. A store upgraded to 6 leaves its full pages as they are
    # until they are rewritten (VACUUM FULL); new pages keep the room.
    (
        6,
        """
ALTER TABLE devices SET (fillfactor = 50);
ALTER TABLE replay SET (fillfactor = 50);
""",
    ),
    # 7: a forward names its reading's partition: the reading's received_s, PostgreSQL's partition
    # key, beside its id. Joined on the id alone, the outbox's claim looked the id up in every week's
    # partition kept: with 60 weeks, 1,230 pages read a forward; with both, 30 (docs/benchmarks.md).
    # Forwards still waiting get theirs from their readings; delivered ones, which are never joined
    # again, keep none (filling them would read every week per row).
    (
        7,
        """
ALTER TABLE outbox ADD COLUMN received_s REAL;
UPDATE outbox SET received_s = (SELECT m.received_s FROM messages m WHERE m.id = outbox.message_id)
  WHERE delivered_at IS NULL;
""",
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class NewerSchema(UserError):
    """The database was written by a newer version of the agent: this one does not open it (its
    tables may mean what this version does not know), and changes nothing in it."""

    def __init__(self, where: str, version: int):
        super().__init__(
            f"{where}: the store is at schema version {version}, newer than this agent's"
            f" {SCHEMA_VERSION}; run the newer agent that wrote it (nothing was changed)"
        )
        self.version = version


def statements(script: str) -> list[str]:
    """The statements of a script (none of ours has a ';' inside a literal)."""
    return [part.strip() for part in script.split(";") if part.strip()]
