"""The owner's store on SQLite in WAL mode: the embedded default (one file beside the agent).

A thin adapter: the decisions (verify, replay, route matching, terms) live elsewhere and call in
with values; the statements are the shared ones of host_agent.store.base. One lock serialises
writers; every method is blocking, so the event loop calls them through asyncio.to_thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from types import TracebackType

from host_agent.store.base import Args, Row, Store, Tx, make_private_dir, make_private_file
from host_agent.store.dialect import SQLITE
from host_agent.store.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, NewerSchema, statements

__all__ = ["SCHEMA", "SCHEMA_VERSION", "SQLiteStore"]

log = logging.getLogger("firstparty.store")
CHECKPOINT_S = 1.0
# before this version, tables were rebuilt to the new definition (0.1.0 -> 2); after it, MIGRATIONS
REBUILT_VERSION = 2


def _table_sql(schema: str, table: str) -> str:
    """The CREATE TABLE statement of `table` as SQLite stores it (without IF NOT EXISTS)."""
    start = schema.index(f"CREATE TABLE IF NOT EXISTS {table} (")
    return schema[start : schema.index(";", start)].replace(" IF NOT EXISTS", "")


def _rebuild(db: Tx, table: str) -> None:
    """Recreate `table` with this version's definition and indexes, keeping every row (and the
    columns this version still has)."""
    db.execute(_table_sql(SCHEMA, table).replace(f"TABLE {table} (", f"TABLE {table}_new (", 1))
    kept = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    columns = ", ".join(
        c for c in (row[1] for row in db.execute(f"PRAGMA table_info({table}_new)")) if c in kept
    )
    db.execute(f"INSERT INTO {table}_new ({columns}) SELECT {columns} FROM {table}")
    db.execute(f"DROP TABLE {table}")  # and its indexes
    db.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
    for statement in SCHEMA.split(";"):
        if f" ON {table} (" in statement:
            db.execute(statement)


class _Transaction:
    """What Store.transaction() returns; one class for all (a class made per call is a reference
    cycle of a dozen objects that only the garbage collector frees: thousands a second)."""

    __slots__ = ("store", "tx")

    def __init__(self, store: SQLiteStore):
        self.store = store
        self.tx = Tx(store.db, SQLITE)

    def __enter__(self) -> Tx:
        store = self.store
        store.lock.acquire()
        try:
            store.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            store.lock.release()
            raise
        return self.tx

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        store = self.store
        try:
            if kind is None:
                store.db.execute("COMMIT")
            elif store.db.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL):
                store.db.execute("ROLLBACK")  # a ROLLBACK then would hide the error that says why
        except sqlite3.Error:
            if store.db.in_transaction:
                store.db.execute("ROLLBACK")
            raise
        finally:
            store.lock.release()


class SQLiteStore(Store):
    """One SQLite database file; safe to call from several threads."""

    dialect = SQLITE
    errors = (sqlite3.Error,)
    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(self, path: Path, max_page_count: int | None = None):
        self.path = Path(path)
        make_private_dir(self.path.parent)
        # route passwords and token hashes are in here: the owner's user only. SQLite gives the WAL
        # and shared-memory files the mode of the database file, whatever the umask.
        for suffix in ("", "-wal", "-shm"):
            if suffix == "" or Path(f"{self.path}{suffix}").exists():
                make_private_file(Path(f"{self.path}{suffix}"))
        self.lock = threading.RLock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:  # before anything is written: not even WAL mode
            self.db.close()
            raise NewerSchema(str(self.path), version)
        self._transaction = _Transaction(self)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: each commit's log is on the disk before the commit returns, and ingest acknowledges
        # to the broker (and receipts tell a device to drop its copy) only after it. NORMAL would
        # survive a killed process but lose the last commits to a power cut or a kernel crash.
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._migrate()
        if max_page_count:
            self.db.execute(f"PRAGMA max_page_count={int(max_page_count)}")
        # Checkpoints (WAL copied into the database file, then fsync) run on a thread of their own,
        # not inside whichever commit crosses SQLite's threshold: a commit then never waits for
        # the disk, which held the ingest of a batch for tens of milliseconds now and then.
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.closing = threading.Event()
        self.checkpointer = threading.Thread(
            target=self._checkpoint_forever, name="fp-checkpoint", daemon=True
        )
        self.checkpointer.start()

    def _checkpoint_forever(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            while not self.closing.wait(CHECKPOINT_S):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never blocks a writer
                except sqlite3.Error as error:
                    log.warning("checkpoint failed (the WAL keeps the data): %s", error)
        finally:
            db.close()

    def _migrate(self) -> None:
        """Bring a database made by an older version up to this schema, in one transaction."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(devices)")}
        if "card_time_s" not in columns:  # 0.1.0 databases: the newest card time, for owner changes
            self.db.execute("ALTER TABLE devices ADD COLUMN card_time_s INTEGER")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        with self.transaction() as db:
            if version < REBUILT_VERSION:
                for table in ("messages", "outbox"):
                    sql = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,))
                    if _table_sql(SCHEMA, table) != sql.fetchone()[0]:
                        _rebuild(db, table)
            for step, script in MIGRATIONS:
                if step > version:
                    for statement in statements(SQLITE.schema(script)):
                        db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.is_closed = True
        self.closing.set()
        self.checkpointer.join()
        with self.lock:
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as error:  # busy (another process reads) or disk full: the WAL stays
                log.info("final checkpoint skipped: %s", error)
            self.db.close()

    def set_max_page_count(self, pages: int) -> None:
        with self.lock:
            self.db.execute(f"PRAGMA max_page_count={int(pages)}")

    def query(self, sql: str, args: Args = ()) -> list[Row]:
        """Rows of one statement (in SQLite's words; the other modules call the named methods)."""
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def plan(self, sql: str, args: Args = ()) -> list[str]:
        """EXPLAIN QUERY PLAN's detail lines ("SEARCH t USING INDEX ...", "SCAN t")."""
        return [row[3] for row in self.query("EXPLAIN QUERY PLAN " + sql, args)]

    def transaction(self) -> _Transaction:
        """Context manager: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error; holds the lock."""
        return self._transaction
