"""The store on PostgreSQL (psycopg 3): for a vendor's fleet, any number of agents on one database.

The statements are the shared ones of host_agent.store.base, rewritten by the PostgreSQL dialect.
What several agents on one database need: a batch holds its devices with advisory locks (replay
windows and cards; no global lock), due forwards are claimed with FOR UPDATE SKIP LOCKED, message
ids come from a sequence, and readings are partitioned by week so that retention drops whole
partitions.

Each agent holds a small pool of connections (psycopg_pool), so that its ingest, its outbox and the
charts' indexer commit side by side instead of waiting for one another's round trips: one agent on
one connection spent half its time waiting for PostgreSQL (docs/benchmarks.md). A transaction is one
connection's, held by its thread until COMMIT; a call made inside it in the same thread joins it. A
connection lost (PostgreSQL restarted) is dropped from the pool and opened again behind it; the call
that found it lost fails with psycopg.Error, and ingest keeps its batch unacknowledged meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from host_agent.errors import UserError
from host_agent.store.base import MESSAGE_COLUMNS, OUTBOX_COLUMNS, Args, Row, Store, Tx
from host_agent.store.dialect import POSTGRES
from host_agent.store.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, NewerSchema, statements

__all__ = ["PostgresStore", "Unreachable"]

log = logging.getLogger("firstparty.store")
PARTITIONS_AHEAD = 2  # weekly partitions made ahead of time, so that readings seldom land in the default
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(1718, 1)"  # one agent creates or migrates the schema at a time
POOL_SIZE = 4  # connections per agent: ingest, the outbox, the charts' indexer and the API at once


# A batch's rows in one statement each, PostgreSQL's bulk paths: COPY for the readings, statements
# over arrays for the rest (COPY has no ON CONFLICT). Per row, an executemany made PostgreSQL parse,
# plan and run one statement each, and psycopg spend Python on each: the bulk of a batch's commit
# (docs/benchmarks.md, 2026-12-06 and 2026-12-06 night). SQLite's executemany is already one
# prepared statement run in C.
MESSAGE_COPY = f"COPY messages ({MESSAGE_COLUMNS}) FROM STDIN"
OUTBOX_INSERT_ARRAYS = (
    f"INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT * FROM"
    " unnest(%s::bigint[], %s::bigint[], %s::text[], %s::double precision[], %s::double precision[])"
    " ON CONFLICT DO NOTHING"
)
# (a batch holds one window per device and kind, and names a device once: no row is hit twice)
REPLAY_UPSERT_ARRAYS = (
    "INSERT INTO replay (device_id, kind, boot, top, seen) SELECT * FROM"
    " unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bytea[])"
    " ON CONFLICT (device_id, kind) DO UPDATE SET boot=EXCLUDED.boot, top=EXCLUDED.top, seen=EXCLUDED.seen"
)
SEEN_UPDATE_ARRAYS = (
    "UPDATE devices SET last_seen = v.last_seen"
    " FROM unnest(%s::double precision[], %s::text[]) AS v(last_seen, device_id)"
    " WHERE devices.device_id = v.device_id"
)
DELIVERED_UPDATE_ARRAY = "UPDATE outbox SET delivered_at = %s WHERE id = ANY(%s::bigint[])"
HOLD_UPDATE_ARRAY = "UPDATE outbox SET next_at = %s WHERE id = ANY(%s::bigint[])"


def _columns(rows: list[Row]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


class _PgTx(Tx):
    __slots__ = ()

    def executemany(self, sql: str, rows: list[Row]) -> None:
        if rows:
            with self.db.cursor() as cursor:
                cursor.executemany(self.dialect.sql(sql), rows)

    def insert_messages(self, rows: list[Row]) -> None:
        if rows:
            with self.db.cursor() as cursor, cursor.copy(MESSAGE_COPY) as copy:
                for row in rows:
                    copy.write_row(row)

    def queue_forwards(self, rows: list[Row]) -> None:
        if rows:
            self.db.execute(OUTBOX_INSERT_ARRAYS, _columns(rows))

    def save_replay_windows(self, rows: list[Row]) -> None:
        if rows:
            self.db.execute(REPLAY_UPSERT_ARRAYS, _columns(rows))

    def mark_seen(self, rows: list[Row]) -> None:
        if rows:
            self.db.execute(SEEN_UPDATE_ARRAYS, _columns(rows))

    def set_delivered(self, now: float, outbox_ids: list[int]) -> None:
        if outbox_ids:
            self.db.execute(DELIVERED_UPDATE_ARRAY, (now, outbox_ids))

    def hold_until(self, next_at: float, outbox_ids: list[int]) -> None:
        if outbox_ids:
            self.db.execute(HOLD_UPDATE_ARRAY, (next_at, outbox_ids))


class _Transaction:
    __slots__ = ("store", "joined")

    def __init__(self, store: PostgresStore):
        self.store = store
        self.joined = False

    def __enter__(self) -> Tx:
        store = self.store
        current: _PgTx | None = getattr(store.local, "tx", None)
        if current is not None:  # inside this thread's transaction: part of it, committed with it
            self.joined = True
            return current
        connection = store.pool.getconn()  # PoolTimeout (an OperationalError) if none can be had
        try:
            connection.execute("BEGIN")
        except BaseException:
            store.pool.putconn(connection)
            raise
        store.local.tx = _PgTx(connection, POSTGRES)
        return store.local.tx

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.joined:
            return
        store = self.store
        db = store.local.tx.db
        try:
            if kind is None:
                db.execute("COMMIT")  # a failed COMMIT leaves nothing behind: PostgreSQL rolled back
            elif not db.closed and not db.broken:
                try:
                    db.execute("ROLLBACK")
                except psycopg.Error as rollback_error:  # the error on its way up says why
                    log.info("rollback failed: %s", rollback_error)
        finally:
            store.local.tx = None
            store.pool.putconn(db)  # a broken one is closed there, and the pool opens another


class Unreachable(UserError):
    """The store's PostgreSQL cannot be reached or refuses the agent: where, and PostgreSQL's reason."""

    def __init__(self, url: str, error: psycopg.OperationalError):
        where = conninfo_to_dict(url)  # the URL without its password
        at = f"{where.get('host', 'localhost')}:{where.get('port', 5432)}/{where.get('dbname', '')}"
        # psycopg's first line: 'connection failed: connection to server at "h", port p failed: <why>'
        reason = (str(error).strip().splitlines() or ["no reason given"])[0].rsplit(": ", 1)[-1].strip()
        super().__init__(f"cannot connect to the PostgreSQL store at {at} ([store] url): {reason}")


class PostgresStore(Store):
    """One PostgreSQL database, shared by every agent that names it; safe to call from several threads."""

    dialect = POSTGRES
    errors = (psycopg.Error,)
    integrity_errors = (psycopg.IntegrityError,)

    def __init__(self, url: str, connect_timeout_s: float = 10.0):
        self.url = url
        self.local = threading.local()  # .tx: the transaction this thread holds open
        connect_s = max(1, int(connect_timeout_s))  # libpq's connect_timeout: whole seconds
        # Any: the statements are rewritten by the dialect at run time, where psycopg's types want literals
        self.pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            # each commit on the disk before it returns, whatever the server's or the database's
            # default: ingest acknowledges to the broker only after it (docs/operations.md)
            kwargs={"autocommit": True, "connect_timeout": connect_s, "options": "-c synchronous_commit=on"},
            timeout=connect_timeout_s,
            open=False,
        )
        try:
            # one connection first, outside the pool: its error says why (the pool's would only say
            # it gave up waiting), and a serve with a wrong URL ends with that one line
            psycopg.connect(url, connect_timeout=connect_s).close()
        except psycopg.OperationalError as error:
            raise Unreachable(url, error) from None
        try:
            self.pool.open(wait=True, timeout=connect_timeout_s)  # PoolTimeout: cannot connect
            self._create_schema()
        except (psycopg.Error, NewerSchema):
            self.close()
            raise
        self.ensure_partitions()

    @property
    def is_closed(self) -> bool:
        return self.pool.closed

    def _create_schema(self) -> None:
        with self.transaction() as db:
            db.execute(SCHEMA_LOCK)
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = row[0] if row and row[0] is not None else 0
            if version > SCHEMA_VERSION:  # rolled back, like everything else of this transaction
                raise NewerSchema(f"PostgreSQL database {db.db.info.dbname}", version)
            if version == SCHEMA_VERSION:
                return
            if version == 0:  # a new database: version 2's tables, then the steps after it
                for statement in statements(POSTGRES.schema(SCHEMA)):
                    db.execute(statement)
            for step, script in MIGRATIONS:
                if step > version:
                    for statement in statements(POSTGRES.schema(script)):
                        db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        self.pool.close()

    def query(self, sql: str, args: Args = ()) -> list[Row]:
        """Rows of one statement (in SQLite's words, rewritten; the other modules call the named methods)."""
        current: _PgTx | None = getattr(self.local, "tx", None)
        if current is not None:
            cursor = current.db.execute(POSTGRES.sql(sql), args)
            return cursor.fetchall() if cursor.description else []
        with self.pool.connection() as db:
            cursor = db.execute(POSTGRES.sql(sql), args)
            return cursor.fetchall() if cursor.description else []

    def plan(self, sql: str, args: Args = ()) -> list[str]:
        """EXPLAIN's lines ("Index Scan using ... on messages_p...", "Seq Scan on ...")."""
        return [row[0] for row in self.query("EXPLAIN " + sql, args)]

    def transaction(self) -> _Transaction:
        """Context manager: BEGIN ... COMMIT, or ROLLBACK on error, on a connection this thread holds."""
        return _Transaction(self)

    # --- partitions of the readings --------------------------------------------------------------

    def ensure_partitions(self, now_s: float | None = None) -> None:
        """Make the readings' partitions of this week and the next PARTITIONS_AHEAD weeks."""
        span = POSTGRES.PARTITION_S
        start = int((now_s or time.time()) // span) * span
        with self.transaction() as db:
            db.execute(SCHEMA_LOCK)
            for week in range(PARTITIONS_AHEAD + 1):
                low = start + week * span
                name = f"messages_p{low}"
                exists = db.execute("SELECT 1 FROM pg_class WHERE relname=?", (name,)).fetchone()
                if exists:
                    continue
                # rows of this range already in the default partition (an agent that ran ahead of
                # its partitions) move into the new one
                db.execute(f"CREATE TABLE {name} (LIKE messages INCLUDING DEFAULTS)")
                db.execute(
                    f"WITH moved AS (DELETE FROM messages_default WHERE received_s >= {low}"
                    f" AND received_s < {low + span} RETURNING *) INSERT INTO {name} SELECT * FROM moved"
                )
                db.execute(
                    f"ALTER TABLE messages ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({low + span})"
                )

    def partitions(self) -> list[tuple[str, float, float]]:
        """(name, low, high) of each week's partition of the readings, oldest first."""
        rows = self.query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid=i.inhrelid"
            " JOIN pg_class p ON p.oid=i.inhparent WHERE p.relname='messages' AND c.relname LIKE 'messages_p%'"
        )
        lows = sorted(int(name[len("messages_p") :]) for (name,) in rows)
        return [(f"messages_p{low}", float(low), float(low + POSTGRES.PARTITION_S)) for low in lows]

    def apply_retention(self, retention_days: float, now_s: float | None = None) -> int:
        """Drop each week's partition wholly past the retention period whose forwards are all done;
        then delete, row by row, the older messages left elsewhere (as the SQLite store does)."""
        now_s = now_s or time.time()
        cutoff = now_s - retention_days * 86400
        removed = 0
        for name, _low, high in self.partitions():
            if high > cutoff:
                break
            with self.transaction() as db:
                db.execute(SCHEMA_LOCK)
                pending = db.execute(
                    f"SELECT 1 FROM outbox o JOIN {name} m ON m.id=o.message_id"
                    " WHERE o.delivered_at IS NULL LIMIT 1"
                ).fetchone()
                if pending:
                    continue
                count = db.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
                db.execute(f"ALTER TABLE messages DETACH PARTITION {name}")
                db.execute(f"DROP TABLE {name}")
                removed += count
        self.ensure_partitions(now_s)
        return removed + super().apply_retention(retention_days, now_s)
