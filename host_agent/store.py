"""The owner's store: SQLite in WAL mode (registry, messages, rejections, routes, outbox, tokens, audit).

A thin adapter: the decisions (verify, replay, route matching, terms) live elsewhere and call in
with values. One lock serialises writers; every method is blocking, so the event loop calls them
through asyncio.to_thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fp import messages
from host_agent import audit
from host_agent import routes as routing
from host_agent.update import summary as update_summary

log = logging.getLogger("firstparty.store")
CHECKPOINT_S = 1.0

# Version 2 dropped messages.digest and its UNIQUE index (the same bytes have the same counters,
# which messages_counter holds: a redelivery is told from a replay by comparing the bytes stored
# under them) and keys the outbox by (route, message) instead of (route, idempotency key): both
# indexes were written at random places, so each commit copied a page per reading to the WAL
# (docs/benchmarks.md, "Host agent").
SCHEMA_VERSION = 2
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


# outbox_pending walks the undelivered rows in order and stops at the limit; through outbox_due,
# SQLite sorted every pending row on each call (quadratic in a backlog)
DUE = (
    "SELECT o.id, o.route_id, o.idempotency_key, o.attempts, m.raw, m.device_id"
    " FROM outbox o INDEXED BY outbox_pending JOIN messages m ON m.id=o.message_id"
    " WHERE o.delivered_at IS NULL AND o.next_at<=? ORDER BY o.id LIMIT ?"
)


def make_private_dir(path: Path) -> None:
    """Create the folder `path` (and its parents) readable by the agent's user only: 0700 whatever
    the umask. A folder of ours already open to group or others is closed (with a warning)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        log.warning("%s was open to other users (mode %o): now 0700", path, info.st_mode & 0o777)
        os.chmod(path, 0o700)


def make_private_file(path: Path) -> None:
    """Create the file `path` if missing, mode 0600 whatever the umask; close an existing one to 0600."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    info = path.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        log.warning("%s was open to other users (mode %o): now 0600", path, info.st_mode & 0o777)
        os.chmod(path, 0o600)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _table_sql(schema: str, table: str) -> str:
    """The CREATE TABLE statement of `table` as SQLite stores it (without IF NOT EXISTS)."""
    start = schema.index(f"CREATE TABLE IF NOT EXISTS {table} (")
    return schema[start : schema.index(";", start)].replace(" IF NOT EXISTS", "")


def _rebuild(db: sqlite3.Connection, table: str) -> None:
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


def reading_values(body: str | None, raw: bytes) -> list[tuple[str, str | None, Any]]:
    """A stored reading's (name, unit, value) list: decoded from its signed bytes, which ingest
    verified; rows an earlier agent wrote may carry a JSON copy in `body` instead."""
    if body is not None:
        return [(name, unit, value) for name, unit, value in json.loads(body)]
    return list(messages.parse_device_message(bytes(raw), "reading").body)  # a reading: the list


def _names(metrics: str | None) -> list[str]:
    """The metric names of a message's `metrics` column (",name,name,")."""
    return [name for name in (metrics or "").split(",") if name]


class _Transaction:
    """What Store.transaction() returns; one class for all (a class made per call is a reference
    cycle of a dozen objects that only the garbage collector frees: thousands a second)."""

    __slots__ = ("store",)

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        store = self.store
        store.lock.acquire()
        try:
            store.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            store.lock.release()
            raise
        return store.db

    def __exit__(self, kind, error, tb) -> None:
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


DISK_FULL = "disk-full"
CANNOT_COMMIT = "cannot-commit"


def write_problem(error: BaseException) -> str:
    """The health reason of a failed store write: disk-full (SQLITE_FULL, ENOSPC) or cannot-commit."""
    import errno

    if getattr(error, "sqlite_errorname", None) == "SQLITE_FULL" or "disk is full" in str(error):
        return DISK_FULL
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DISK_FULL
    return CANNOT_COMMIT


class Store:
    """One SQLite database file; safe to call from several threads."""

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
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across a process kill
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
        if self.db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self.transaction() as db:
            for table in ("messages", "outbox"):
                sql = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,))
                if _table_sql(SCHEMA, table) != sql.fetchone()[0]:
                    _rebuild(db, table)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
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

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def transaction(self) -> _Transaction:
        """Context manager: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error; holds the lock."""
        return _Transaction(self)

    # --- registry ------------------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT device_id, owner_id, name, board, firmware, state, first_seen, last_seen, last_status"
            " FROM devices ORDER BY device_id"
        )
        keys = ("device_id", "owner_id", "name", "board", "firmware", "state", "first_seen", "last_seen")
        out = []
        for row in rows:
            item: dict[str, Any] = dict(zip(keys, row[:8], strict=True))
            item["status"] = json.loads(row[8]) if row[8] else None
            status = item["status"]  # fp.ota's update state, from the device's last status
            item["update"] = update_summary(status.get("update") if isinstance(status, dict) else None)
            out.append(item)
        return out

    def device(self, device_id: str) -> dict[str, Any] | None:
        for item in self.devices():
            if item["device_id"] == device_id:
                return item
        return None

    def card(self, device_id: str) -> bytes | None:
        rows = self.query("SELECT card FROM devices WHERE device_id=?", (device_id,))
        return bytes(rows[0][0]) if rows else None

    def set_state(self, device_id: str, state: str) -> int:
        """Set pending/accepted/rejected; on accept, held readings become routable; returns rows changed."""
        with self.transaction() as db:
            changed = db.execute("UPDATE devices SET state=? WHERE device_id=?", (state, device_id)).rowcount
            if changed and state == "accepted":
                db.execute("UPDATE messages SET held=0 WHERE device_id=? AND held=1", (device_id,))
            if changed and state == "rejected":
                db.execute("DELETE FROM messages WHERE device_id=? AND held=1", (device_id,))
            return changed

    def rename(self, device_id: str, name: str) -> int:
        with self.transaction() as db:
            return db.execute("UPDATE devices SET name=? WHERE device_id=?", (name, device_id)).rowcount

    def held_messages(self, device_id: str) -> list[int]:
        return [
            r[0] for r in self.query("SELECT id FROM messages WHERE device_id=? AND held=0", (device_id,))
        ]

    # --- readings ------------------------------------------------------------------------------

    def readings(
        self,
        device_ids: list[str] | None = None,
        metric: str | None = None,
        since_s: float | None = None,
        until_s: float | None = None,
        after_id: int = 0,
        limit: int = 100,
        allowed_metrics: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` readings after `after_id`, oldest first, whole (values and signed message).

        `allowed_metrics` keeps the readings that carry at least one of those metrics; the filter is
        in the query, before the limit, so a short page means there is no more. Cutting a reading
        down to the allowed values is the caller's (the API's).
        """
        sql = "SELECT id, device_id, boot, seq, time_s, received_s, body, raw, held FROM messages WHERE kind='reading' AND id>?"
        args: list[Any] = [after_id]
        if device_ids is not None:
            sql += f" AND device_id IN ({','.join('?' * len(device_ids))})"
            args += device_ids
        if metric:
            # the column is ",name,name,"; instr, not LIKE, for names with _ or % in them
            sql += " AND instr(metrics, ?) > 0"
            args.append(f",{metric},")
        if allowed_metrics is not None:
            sql += " AND (" + (" OR ".join("instr(metrics, ?) > 0" for _ in allowed_metrics) or "0") + ")"
            args += [f",{name}," for name in allowed_metrics]
        if since_s is not None:
            sql += " AND COALESCE(time_s, received_s) >= ?"
            args.append(since_s)
        if until_s is not None:
            sql += " AND COALESCE(time_s, received_s) < ?"
            args.append(until_s)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        out = []
        for row in self.query(sql, tuple(args)):
            values = reading_values(row[6], row[7])
            out.append(
                {
                    "id": row[0],
                    "device_id": row[1],
                    "boot": row[2],
                    "seq": row[3],
                    "time_s": row[4],
                    "received_s": row[5],
                    "values": [{"n": n, "u": u, "v": v} for n, u, v in values],
                    "message_hex": bytes(row[7]).hex(),
                    "is_held": bool(row[8]),
                }
            )
        return out

    def count_readings(self) -> int:
        return self.query("SELECT COUNT(*) FROM messages WHERE kind='reading'")[0][0]

    def apply_retention(self, retention_days: float, now_s: float | None = None) -> int:
        """Delete messages received before the retention period whose forwards are all done."""
        cutoff = (now_s or time.time()) - retention_days * 86400
        with self.transaction() as db:
            return db.execute(
                "DELETE FROM messages WHERE received_s < ? AND id NOT IN"
                " (SELECT message_id FROM outbox WHERE delivered_at IS NULL)",
                (cutoff,),
            ).rowcount

    # --- rejections ----------------------------------------------------------------------------

    def rejections(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT id, at, reason, topic, device_id, detail FROM rejections ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        keys = ("id", "at", "reason", "topic", "device_id", "detail")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def rejection_counts(self) -> dict[str, int]:
        return dict(self.query("SELECT reason, COUNT(*) FROM rejections GROUP BY reason"))

    # --- routes --------------------------------------------------------------------------------

    def routes(self, include_inactive: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT id, name, spec, created, active, grant_bytes FROM routes"
        if not include_inactive:
            sql += " WHERE active=1"
        out = []
        for row in self.query(sql + " ORDER BY id"):
            spec = json.loads(row[2])
            spec.update(
                id=row[0],
                name=row[1],
                created=row[3],
                is_active=bool(row[4]),
                grant_hex=bytes(row[5]).hex() if row[5] else None,
            )
            out.append(spec)
        return out

    def add_route(self, name: str, spec: dict, grant: bytes | None) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO routes (name, spec, created, grant_bytes) VALUES (?,?,?,?)",
                (name, json.dumps(spec), time.time(), grant),
            )
            self._audit(db, "route-added", {"name": name, "spec": routing.without_secrets(spec)})
            return int(cursor.lastrowid or 0)

    def update_route(self, name: str, spec: dict, grant: bytes | None, keeps=None) -> int:
        """Replace the active route's spec and grant in one transaction; return the rows changed.

        `keeps(device_id, metric_names) -> bool` says whether the new spec still carries a reading:
        the forwards not yet delivered that it does not are dropped, so none leaves under a grant
        that does not cover it. The others stay queued, for the new destination.
        """
        with self.transaction() as db:
            rows = db.execute("SELECT id, spec FROM routes WHERE name=? AND active=1", (name,)).fetchall()
            if not rows:
                return 0
            route_id, before = rows[0][0], json.loads(rows[0][1])
            db.execute(
                "UPDATE routes SET spec=?, grant_bytes=? WHERE id=?", (json.dumps(spec), grant, route_id)
            )
            dropped: list[int] = []
            if keeps is not None:
                pending = db.execute(
                    "SELECT o.id, m.device_id, m.metrics FROM outbox o JOIN messages m ON m.id=o.message_id"
                    " WHERE o.route_id=? AND o.delivered_at IS NULL",
                    (route_id,),
                ).fetchall()
                dropped = [i for i, device_id, names in pending if not keeps(device_id, _names(names))]
                db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in dropped])
            shown = routing.without_secrets(spec, before)
            self._audit(db, "route-changed", {"name": name, "spec": shown, "dropped_forwards": len(dropped)})
            return 1

    def remove_route(self, name: str, why: str = "removed") -> int:
        with self.transaction() as db:
            rows = db.execute("SELECT id FROM routes WHERE name=? AND active=1", (name,)).fetchall()
            if not rows:
                return 0
            db.execute("UPDATE routes SET active=0 WHERE id=?", (rows[0][0],))
            db.execute("DELETE FROM outbox WHERE route_id=? AND delivered_at IS NULL", (rows[0][0],))
            self._audit(db, "route-" + why, {"name": name})
            return 1

    # --- outbox --------------------------------------------------------------------------------

    def due(self, now_s: float, limit: int = 200) -> list[tuple]:
        """Return (outbox id, route id, idempotency key, attempts, raw, device_id) due for delivery."""
        return self.query(DUE, (now_s, limit))

    def claim_due(self, now_s: float, limit: int, lease_s: float) -> list[tuple]:
        """The forwards due(), each held back from the other agents on this store for `lease_s`.

        For a $share/ group, whose agents would otherwise all deliver every due forward. A forward
        neither marked delivered nor failed within its lease (its agent died) is due again, for
        whichever agent looks first: still at least once.
        """
        with self.transaction() as db:
            rows = db.execute(DUE, (now_s, limit)).fetchall()
            db.executemany("UPDATE outbox SET next_at=? WHERE id=?", [(now_s + lease_s, r[0]) for r in rows])
        return rows

    def next_due_s(self) -> float | None:
        rows = self.query("SELECT MIN(next_at) FROM outbox WHERE delivered_at IS NULL")
        return rows[0][0] if rows else None

    def mark_delivered(
        self, outbox_ids: list[int], route_name: str, terms: dict, keys: list[str] | None = None
    ) -> None:
        """Mark forwards delivered; `keys` are their idempotency keys if the caller has them."""
        if not outbox_ids:
            return
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE outbox SET delivered_at=? WHERE id=?", [(now, i) for i in outbox_ids])
            if keys is None:
                keys = [
                    r[0]
                    for r in db.execute(
                        f"SELECT idempotency_key FROM outbox WHERE id IN ({','.join('?' * len(outbox_ids))})",
                        tuple(outbox_ids),
                    )
                ]
            # one audit entry per delivered batch: which readings went to which recipient, on which terms
            self._audit(db, "shared", {"route": route_name, "terms": terms, "readings": keys})

    def mark_failed(self, retries: list[tuple[int, float]], error: str) -> None:
        """Count a failed attempt of each (outbox id, when to try it next), in one transaction.

        One commit per batch, not per forward: each commit adds pages to the WAL, which a
        failing destination would otherwise grow by megabytes (a full disk, in issue 15).
        """
        with self.transaction() as db:
            db.executemany(
                "UPDATE outbox SET attempts=attempts+1, next_at=?, last_error=? WHERE id=?",
                [(next_at, error[:200], outbox_id) for outbox_id, next_at in retries],
            )

    def outbox_pending(self) -> int:
        return self.query("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")[0][0]

    def outbox_delivered(self) -> int:
        return self.query("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NOT NULL")[0][0]

    # --- tokens --------------------------------------------------------------------------------

    def add_token(
        self,
        token: str,
        name: str,
        scope: str,
        devices: list[str] | None,
        metrics: list[str] | None,
        account: str | None = None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO tokens (token_hash, name, scope, devices, metrics, account, created)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    token_hash(token),
                    name,
                    scope,
                    json.dumps(devices) if devices is not None else None,
                    json.dumps(metrics) if metrics is not None else None,
                    account,
                    time.time(),
                ),
            )
            self._audit(
                db,
                "token-granted",
                {"name": name, "scope": scope, "devices": devices, "metrics": metrics, "account": account},
            )

    def revoke_token(self, name: str) -> int:
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE tokens SET revoked=? WHERE name=? AND revoked IS NULL", (time.time(), name)
            ).rowcount
            if changed:
                self._audit(db, "token-revoked", {"name": name})
            return changed

    def tokens(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT name, scope, devices, metrics, account, created, revoked FROM tokens")
        keys = ("name", "scope", "devices", "metrics", "account", "created", "revoked")
        out = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            item["devices"] = json.loads(item["devices"]) if item["devices"] else None
            item["metrics"] = json.loads(item["metrics"]) if item["metrics"] else None
            out.append(item)
        return out

    def token(self, token: str) -> dict[str, Any] | None:
        return self.token_by_hash(token_hash(token))

    def token_by_hash(self, hashed: str) -> dict[str, Any] | None:
        """The live token with this hash, or None if unknown or revoked."""
        rows = self.query(
            "SELECT name, scope, devices, metrics, account FROM tokens WHERE token_hash=? AND revoked IS NULL",
            (hashed,),
        )
        if not rows:
            return None
        name, scope, devices, metrics, account = rows[0]
        return {
            "name": name,
            "scope": scope,
            "devices": json.loads(devices) if devices else None,
            "metrics": json.loads(metrics) if metrics else None,
            "account": account,
        }

    # --- audit ---------------------------------------------------------------------------------

    def _audit(self, db: sqlite3.Connection, kind: str, data: dict) -> None:
        last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, audit.GENESIS)
        at = round(time.time(), 6)
        text = audit.canonical(data)
        db.execute(
            "INSERT INTO audit (seq, at, kind, data, prev, hash) VALUES (?,?,?,?,?,?)",
            (seq, at, kind, text, prev, audit.entry_hash(prev, seq, at, kind, text)),
        )

    def audit(self, kind: str, data: dict) -> None:
        with self.transaction() as db:
            self._audit(db, kind, data)

    def audit_entries(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT seq, at, kind, data, prev, hash FROM audit WHERE seq>? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [
            {"seq": r[0], "at": r[1], "kind": r[2], "data": json.loads(r[3]), "prev": r[4], "hash": r[5]}
            for r in rows
        ]

    def audit_verify(self) -> tuple[int, str] | None:
        rows = self.query("SELECT seq, at, kind, data, prev, hash FROM audit ORDER BY seq")
        return audit.first_bad(rows)
