"""The store's side of the console's time series: the SQL of the series index and its plots.

The console (host_agent.console.series) decides what is plotted and folds readings into values;
these methods are where that meets the database, one statement per question, in each backend's
words (host_agent.store.dialect): SQLite cuts a bucket with CAST(... AS INTEGER), which truncates,
and PostgreSQL with FLOOR(...), since its CAST rounds (a reading would land in the next bucket).
Both read the index `series` by its primary key (device_id, metric, t) and the hourly sums
`series_hour` by theirs; the tables are version 4 of the schema (host_agent.store.schema).

Several agents on one PostgreSQL each run an indexer: its cursor (series_state) moves only over
message ids no ingest transaction still holds (Tx.hold_message_ids / settled_message_id), and a
batch is written only if the cursor is still where it was read (else another agent did it).
"""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from typing import Any

from host_agent.store.dialect import Dialect
from host_agent.store.records import Args, Row

__all__ = ["SeriesQueries"]

NO_HORIZON = 2**62  # SQLite: ids are committed in order (one writer), every id read is settled
UNINDEXED = (
    "SELECT id, device_id, COALESCE(time_s, received_s), body, raw FROM messages"
    " WHERE id>? AND id<=? AND kind='reading' ORDER BY id LIMIT ?"
)
# a device's metric names: one search of the primary key per name (a loose index scan), where
# DISTINCT read every value of the device (1e4 rows at 1e7 readings, bench/bench_pg_indexes.py)
METRICS = (
    "WITH RECURSIVE m(metric) AS (SELECT MIN(metric) FROM series WHERE device_id=?"
    " UNION ALL SELECT (SELECT MIN(metric) FROM series WHERE device_id=? AND metric>m.metric)"
    " FROM m WHERE m.metric IS NOT NULL) SELECT metric FROM m WHERE metric IS NOT NULL"
)
ADD_VALUE = "INSERT INTO series VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING"
SET_CURSOR = (
    "INSERT INTO series_state (id, last_message_id) VALUES (1, ?)"
    " ON CONFLICT (id) DO UPDATE SET last_message_id=excluded.last_message_id"
)


class SeriesQueries:
    """Mixed into host_agent.store.base.Store."""

    dialect: Dialect

    @abstractmethod
    def query(self, sql: str, args: Args = ()) -> list[Row]: ...

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Any]: ...  # a Tx

    @abstractmethod
    def plan(self, sql: str, args: Args = ()) -> list[str]:
        """The plan the database would follow for one statement (EXPLAIN), one line a step."""

    # --- the plots ------------------------------------------------------------------------------

    def series_buckets(
        self, device_id: str, metric: str, since_s: float, until_s: float, step_s: float
    ) -> list[tuple[float, float, float, float, int]]:
        """(first t, min, avg, max, count) of each non-empty bucket of `step_s` seconds from since_s."""
        rows = self.query(
            self.dialect.series_buckets,
            (float(since_s), float(step_s), device_id, metric, float(since_s), float(until_s)),
        )
        return [(r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

    def series_hourly_buckets(
        self, device_id: str, metric: str, first_hour: int, end_hour: int, step_s: float
    ) -> list[tuple[float, float, float, float, int]]:
        """The same from the hourly sums, hours [first_hour, end_hour), buckets of whole hours."""
        rows = self.query(
            self.dialect.series_hourly_buckets,
            (float(first_hour * 3600), float(step_s), device_id, metric, int(first_hour), int(end_hour)),
        )
        return [(r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

    def series_metrics(self, device_id: str) -> list[str]:
        """The metrics a device has numbers for in the index, by name."""
        return sorted(r[0] for r in self.query(METRICS, (device_id, device_id)))

    # --- the indexer ----------------------------------------------------------------------------

    def settled_message_id(self) -> int:
        """The largest message id below which no transaction still holds an id it may insert."""
        hold = getattr(self.dialect, "settle_message_ids", None)
        if hold is None:
            return NO_HORIZON
        with self.transaction() as db:
            db.execute(hold)  # waits for the ingest transactions that hold ids; new ones wait for us
            last_value, is_called = db.execute("SELECT last_value, is_called FROM messages_id_seq").fetchone()
        return int(last_value) if is_called else 0

    def series_cursor(self) -> int:
        """The id of the last message the index has read."""
        rows = self.query("SELECT last_message_id FROM series_state WHERE id=1")
        return int(rows[0][0]) if rows else 0

    def unindexed_readings(
        self, after_id: int, limit: int
    ) -> list[tuple[int, str, float, str | None, bytes]]:
        """(id, device_id, time, body, raw) of the readings after `after_id` that are settled."""
        rows = self.query(UNINDEXED, (after_id, self.settled_message_id(), limit))
        return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]

    def add_series(
        self,
        after_id: int,
        last_id: int,
        values: list[tuple[str, str, float, int, float]],
        hours: list[tuple[str, str, int, int, float, float, float, float]],
    ) -> bool:
        """Index a batch: (device_id, metric, t, message_id, v) values and (device_id, metric, hour,
        n, total, low, high, first_t) sums, and move the cursor from `after_id` to `last_id`.

        False (nothing written) when the cursor is no longer at `after_id`: another agent on this
        database indexed the batch first, and counting its hours twice would be wrong.
        """
        with self.transaction() as db:
            lock = getattr(self.dialect, "lock_series", None)
            if lock:
                db.execute(lock)
            row = db.execute("SELECT last_message_id FROM series_state WHERE id=1").fetchone()
            if (int(row[0]) if row else 0) != after_id:
                return False
            db.executemany(ADD_VALUE, values)
            db.executemany(self.dialect.add_hour, hours)
            db.execute(SET_CURSOR, (last_id,))
        return True

    def prune_series(self) -> int:
        """Drop the values of readings the store no longer holds (retention); a scan, run rarely."""
        with self.transaction() as db:
            oldest = db.execute("SELECT MIN(id) FROM messages WHERE kind='reading'").fetchone()[0]
            if oldest is None:
                return 0
            oldest_t = db.execute(
                "SELECT COALESCE(time_s, received_s) FROM messages WHERE id=?", (oldest,)
            ).fetchone()[0]
            db.execute("DELETE FROM series_hour WHERE hour<?", (int(oldest_t // 3600),))
            return db.execute("DELETE FROM series WHERE message_id<?", (oldest,)).rowcount
