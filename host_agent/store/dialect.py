"""Where SQLite's SQL and PostgreSQL's differ: the one place (the store's methods are written in
SQLite's words, and PostgreSQL's dialect rewrites the few phrases that differ, once per statement).
"""

from __future__ import annotations

import functools
import re

__all__ = ["POSTGRES", "SQLITE", "Dialect", "Postgres"]

# outbox_pending walks the undelivered rows in order and stops at the limit; through outbox_due,
# SQLite sorted every pending row on each call (quadratic in a backlog). received_s is the readings'
# partition key in PostgreSQL: with it each forward's reading is looked up in its week alone.
_DUE = (
    "SELECT o.id, o.route_id, o.idempotency_key, o.attempts, m.raw, m.device_id"
    " FROM outbox o INDEXED BY outbox_pending"
    " JOIN messages m ON m.id=o.message_id AND m.received_s=o.received_s"
    " WHERE o.delivered_at IS NULL AND o.next_at<=? ORDER BY o.id LIMIT ?"
)


# the console's plots (host_agent.store.timeseries): buckets of the series index, and of its hourly
# sums; {bucket} is where the dialects differ
_BUCKETS = (
    "SELECT {bucket} AS b, MIN(t), MIN(v), AVG(v), MAX(v), COUNT(*) FROM series"
    " WHERE device_id=? AND metric=? AND t>=? AND t<? GROUP BY b ORDER BY b"
)
_HOURLY_BUCKETS = (
    "SELECT {bucket} AS b, MIN(first_t), MIN(low), SUM(total) / {n}, MAX(high), {n}"
    " FROM series_hour WHERE device_id=? AND metric=? AND hour>=? AND hour<? GROUP BY b ORDER BY b"
)
_ADD_HOUR = (
    "INSERT INTO series_hour VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (device_id, metric, hour) DO UPDATE SET"
    " n=series_hour.n+excluded.n, total=series_hour.total+excluded.total,"
    " low={least}(series_hour.low, excluded.low), high={greatest}(series_hour.high, excluded.high),"
    " first_t={least}(series_hour.first_t, excluded.first_t)"
)


_STORAGE_PARAMETERS = re.compile(r"ALTER TABLE \w+ SET \([^)]*\);\n?")


class Dialect:
    """SQLite: the statements as written."""

    name = "sqlite"
    # CAST truncates toward zero, and t >= since_s: the bucket is floor((t - since_s) / step)
    series_buckets = _BUCKETS.format(bucket="CAST((t - ?) / ? AS INTEGER)")
    series_hourly_buckets = _HOURLY_BUCKETS.format(
        bucket="CAST((hour * 3600 - ?) / ? AS INTEGER)", n="SUM(n)"
    )
    add_hour = _ADD_HOUR.format(least="MIN", greatest="MAX")
    due = _DUE
    # BEGIN IMMEDIATE already holds every other writer off, so a claim is the same read
    claim_due = _DUE
    new_message_ids = "SELECT COALESCE(MAX(id), 0) FROM messages"

    def sql(self, statement: str) -> str:
        return statement

    def schema(self, script: str) -> str:
        # storage parameters (a table's fillfactor) are PostgreSQL's; SQLite has no such setting
        return _STORAGE_PARAMETERS.sub("", script)


class Postgres(Dialect):
    """PostgreSQL (psycopg 3): %s placeholders, upserts, its types, partitioned readings."""

    name = "postgresql"
    # CAST rounds in PostgreSQL: FLOOR is SQLite's truncation here (the same as date_bin's bins on
    # timestamps, without converting t, which is seconds). SUM of a BIGINT is a NUMERIC: cast back.
    series_buckets = _BUCKETS.format(bucket="FLOOR((t - ?) / ?)::BIGINT")
    series_hourly_buckets = _HOURLY_BUCKETS.format(
        bucket="FLOOR((hour * 3600 - ?) / ?)::BIGINT", n="SUM(n)::DOUBLE PRECISION"
    )
    add_hour = _ADD_HOUR.format(least="LEAST", greatest="GREATEST")
    due = _DUE.replace(" INDEXED BY outbox_pending", "")
    # Several agents on one database: each takes the due rows no other transaction holds, and
    # holds them (the lease, written before the commit) while it delivers them.
    claim_due = due + " FOR UPDATE OF o SKIP LOCKED"
    new_message_ids = "SELECT nextval('messages_id_seq') FROM generate_series(1, ?)"
    # advisory locks held to the end of the transaction: one per device (its replay windows and
    # card), taken in one order by every agent so that two batches never wait on each other in a
    # cycle; one for the audit chain, whose next entry depends on the last
    lock_devices = (
        "SELECT pg_advisory_xact_lock(k) FROM"
        " (SELECT DISTINCT hashtextextended(d, 0) AS k FROM unnest(?::text[]) AS d ORDER BY k) AS keys"
    )
    lock_audit = "SELECT pg_advisory_xact_lock(1718, 0)"
    # Message ids come from a sequence, and transactions commit in any order: an id the console's
    # indexer sees may have a smaller one still uncommitted. Ingest holds this lock shared from its
    # ids to its commit; the indexer takes it alone for a moment to read the sequence: every id up
    # to that value is then committed or rolled back (host_agent.store.timeseries).
    hold_message_ids = "SELECT pg_advisory_xact_lock_shared(1718, 2)"
    settle_message_ids = "SELECT pg_advisory_xact_lock(1718, 2)"
    lock_series = "SELECT pg_advisory_xact_lock(1718, 3)"  # one indexer writes at a time

    # (SQLite's words, PostgreSQL's) in statements
    PHRASES = (
        ("INSERT OR IGNORE INTO outbox", "INSERT INTO outbox"),
        ("INSERT OR REPLACE INTO replay", "INSERT INTO replay"),
        ("MAX(COALESCE(", "GREATEST(COALESCE("),
        ("instr(", "strpos("),
    )
    SUFFIXES = (
        ("INSERT OR IGNORE INTO outbox", " ON CONFLICT DO NOTHING"),
        (
            "INSERT OR REPLACE INTO replay",
            " ON CONFLICT (device_id, kind) DO UPDATE SET boot=EXCLUDED.boot, top=EXCLUDED.top, seen=EXCLUDED.seen",
        ),
    )
    # Readings are partitioned by the time they were received (PARTITION_S a partition), so that
    # retention drops whole partitions; the key is in the primary key, as PostgreSQL requires, and
    # the counters' index is not unique across partitions (the per-device lock and the replay window
    # decide a duplicate; the index finds the bytes)
    PARTITION_S = 7 * 86400
    MESSAGES = (
        "CREATE TABLE IF NOT EXISTS messages (\n"
        "  id BIGSERIAL, device_id TEXT NOT NULL, kind TEXT NOT NULL, boot BIGINT, seq BIGINT,\n"
        "  time_s BIGINT, received_s DOUBLE PRECISION NOT NULL, raw BYTEA NOT NULL, body TEXT,\n"
        "  metrics TEXT, held BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (id, received_s))"
        " PARTITION BY RANGE (received_s);\n"
        "CREATE TABLE IF NOT EXISTS messages_default PARTITION OF messages DEFAULT;\n"
    )
    # (SQLite's words, PostgreSQL's) in the schema
    TYPES = (
        (r"\bINTEGER PRIMARY KEY\b", "BIGSERIAL PRIMARY KEY"),
        (r"\bINTEGER\b", "BIGINT"),
        (r"\bREAL\b", "DOUBLE PRECISION"),
        (r"\bBLOB\b", "BYTEA"),
        (r"\)\s*WITHOUT ROWID", ")"),  # SQLite's clustered tables; PostgreSQL's tables are heaps
    )

    def sql(self, statement: str) -> str:
        return _postgres_sql(statement)

    def schema(self, script: str) -> str:
        out = re.sub(
            r"CREATE TABLE IF NOT EXISTS messages \(.*?\);\n", lambda _: self.MESSAGES, script, flags=re.S
        )
        out = out.replace(
            "CREATE UNIQUE INDEX IF NOT EXISTS messages_counter",
            "CREATE INDEX IF NOT EXISTS messages_counter",
        )
        for pattern, replacement in self.TYPES:
            out = re.sub(pattern, replacement, out)
        return out


@functools.lru_cache(maxsize=1024)  # a fixed set of statements, rewritten once each
def _postgres_sql(statement: str) -> str:
    out = statement.replace("%", "%%").replace("?", "%s")
    for sqlite_words, postgres_words in Postgres.PHRASES:
        out = out.replace(sqlite_words, postgres_words)
    for sqlite_words, suffix in Postgres.SUFFIXES:
        if statement.startswith(sqlite_words):
            out += suffix
    return out


SQLITE = Dialect()
POSTGRES = Postgres()
