"""The store's interface and what both backends share: every method named for what it does.

The store is the only module that speaks SQL. Its methods are written once, in SQLite's words;
host_agent.store.dialect rewrites the few phrases PostgreSQL spells otherwise. A backend
(store.sqlite, store.postgres) supplies the connection: `query`, `transaction` and `close`.
Every method is blocking, so the event loop calls them through asyncio.to_thread.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from fp import messages
from host_agent.routes import rules as routing
from host_agent.store import audit
from host_agent.store.dialect import Dialect
from host_agent.store.records import (
    AGREEMENT_COLUMNS,
    DEVICE_COLUMNS,
    TOKEN_COLUMNS,
    AgreementChanges,
    AgreementRecord,
    Args,
    Device,
    Row,
    Token,
)
from host_agent.store.schema import statements
from host_agent.store.timeseries import METRICS, UNINDEXED, SeriesQueries

__all__ = [
    "Args",
    "Row",
    "CANNOT_COMMIT",
    "DISK_FULL",
    "Store",
    "Tx",
    "make_private_dir",
    "make_private_file",
    "reading_values",
    "token_hash",
    "write_problem",
]

log = logging.getLogger("firstparty.store")


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


def reading_values(body: str | None, raw: bytes) -> list[tuple[str, str | None, Any]]:
    """A stored reading's (name, unit, value) list: decoded from its signed bytes, which ingest
    verified; rows an earlier agent wrote may carry a JSON copy in `body` instead."""
    if body is not None:
        return [(name, unit, value) for name, unit, value in json.loads(body)]
    return list(messages.parse_device_message(bytes(raw), "reading").body)  # a reading: the list


def _names(metrics: str | None) -> list[str]:
    """The metric names of a message's `metrics` column (",name,name,")."""
    return [name for name in (metrics or "").split(",") if name]


READ_CHUNK = 500  # ids in one IN (...): far below SQLite's 32,766 parameters, and one round trip
MESSAGE_COLUMNS = "id, device_id, kind, boot, seq, time_s, received_s, raw, body, metrics, held"
MESSAGE_INSERT = f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
OUTBOX_COLUMNS = "route_id, message_id, idempotency_key, next_at, received_s"
OUTBOX_INSERT = f"INSERT OR IGNORE INTO outbox ({OUTBOX_COLUMNS}) VALUES (?,?,?,?,?)"


LATEST_READING = (
    "SELECT body, raw FROM messages WHERE kind='reading' AND device_id=? ORDER BY id DESC LIMIT 1"
)


def _readings_sql(
    device_ids: list[str] | None,
    metric: str | None,
    since_s: float | None,
    until_s: float | None,
    after_id: int,
    limit: int,
    allowed_metrics: list[str] | None,
) -> tuple[str, Args]:
    """The statement of Store.readings and its arguments."""
    # A time range of a device is a range of messages_signed_time: SQLite, without statistics,
    # would walk messages_device by id instead (every reading of the device, the range filtered);
    # the + keeps it off that index's id (PostgreSQL weighs both by its statistics either way)
    is_ranged = device_ids is not None and (since_s is not None or until_s is not None)
    sql = "SELECT id, device_id, boot, seq, time_s, received_s, body, raw, held FROM messages WHERE kind='reading'"
    sql += " AND +id>?" if is_ranged else " AND id>?"
    args: list[Any] = [after_id]
    if device_ids is not None:
        # no device: no reading (SQLite reads "IN ()" as false; PostgreSQL refuses it)
        sql += f" AND device_id IN ({','.join('?' * len(device_ids))})" if device_ids else " AND 1=0"
        args += device_ids
    if metric:
        # the column is ",name,name,"; instr, not LIKE, for names with _ or % in them
        sql += " AND instr(metrics, ?) > 0"
        args.append(f",{metric},")
    if allowed_metrics is not None:
        sql += " AND (" + (" OR ".join("instr(metrics, ?) > 0" for _ in allowed_metrics) or "1=0") + ")"
        args += [f",{name}," for name in allowed_metrics]
    if since_s is not None:
        sql += " AND COALESCE(time_s, received_s) >= ?"
        args.append(since_s)
    if until_s is not None:
        sql += " AND COALESCE(time_s, received_s) < ?"
        args.append(until_s)
    sql += " ORDER BY id LIMIT ?"
    args.append(limit)
    return sql, tuple(args)


class Tx:
    """One open transaction: the reads and writes of a batch (ingest), named for what they do.

    Only the store's modules hold its connection; ingest and the others call these methods.
    """

    __slots__ = ("db", "dialect")

    def __init__(self, db: Any, dialect: Dialect):
        self.db = db  # the backend's connection, in a transaction
        self.dialect = dialect

    def execute(self, sql: str, args: Args = ()) -> Any:
        return self.db.execute(self.dialect.sql(sql), args)

    def executemany(self, sql: str, rows: list[Row]) -> None:
        if rows:
            self.db.executemany(self.dialect.sql(sql), rows)

    def lock_devices(self, device_ids: list[str]) -> None:
        """Hold these devices' replay windows and cards against the other agents on this database
        until the commit (SQLite's BEGIN IMMEDIATE holds every writer already)."""
        lock = getattr(self.dialect, "lock_devices", None)
        if lock and device_ids:
            self.execute(lock, (sorted(device_ids),))

    def lock_audit(self) -> None:
        """Hold the audit chain's end until the commit (SQLite: held already)."""
        lock = getattr(self.dialect, "lock_audit", None)
        if lock:
            self.execute(lock)

    # --- ingest's reads -------------------------------------------------------------------------

    def new_message_ids(self, count: int) -> list[int]:
        """`count` ids for messages this transaction may insert (as SQLite would pick them)."""
        hold = getattr(self.dialect, "hold_message_ids", None)
        if hold:  # to the commit: the console's indexer reads past these ids only once they settle
            self.execute(hold)
        if self.dialect.name == "sqlite":  # as SQLite would pick them: BEGIN IMMEDIATE holds the largest
            largest = self.execute(self.dialect.new_message_ids).fetchone()[0]
            return list(range(largest + 1, largest + 1 + count))
        return [row[0] for row in self.execute(self.dialect.new_message_ids, (count,)).fetchall()]

    def replay_windows_of(self, device_ids: set[str]) -> dict[tuple[str, str], tuple[int, int, bytes]]:
        """The stored (boot, top, seen) of these devices' replay windows, by (device id, kind).

        One read for a batch's devices, not one per device: on PostgreSQL each is a round trip.
        """
        ids = sorted(device_ids)
        found: dict[tuple[str, str], tuple[int, int, bytes]] = {}
        for start in range(0, len(ids), READ_CHUNK):
            chunk = ids[start : start + READ_CHUNK]
            marks = ",".join("?" * len(chunk))
            for device_id, kind, boot, top, seen in self.execute(
                f"SELECT device_id, kind, boot, top, seen FROM replay WHERE device_id IN ({marks})", chunk
            ).fetchall():
                found[device_id, kind] = (boot, top, bytes(seen))
        return found

    def message_bytes(self, device_id: str, kind: str, boot: int, seq: int) -> bytes | None:
        """The signed bytes stored under a message's counters, if any."""
        row = self.execute(
            "SELECT raw FROM messages WHERE device_id=? AND kind=? AND boot=? AND seq=?",
            (device_id, kind, boot, seq),
        ).fetchone()
        return bytes(row[0]) if row else None

    def device_key(self, device_id: str) -> tuple[bytes, str, str | None] | None:
        """A device's (public key, state, owner id), or None for a device without a card."""
        row = self.execute(
            "SELECT public_key, state, owner_id FROM devices WHERE device_id=?", (device_id,)
        ).fetchone()
        return (bytes(row[0]), row[1], row[2]) if row else None

    def newest_card(self, device_id: str) -> tuple[int | None, str | None]:
        """(time of the newest card held, its owner id); (None, None) for an unknown device."""
        row = self.execute("SELECT card_time_s, owner_id FROM devices WHERE device_id=?", (device_id,))
        return row.fetchone() or (None, None)

    # --- ingest's writes ------------------------------------------------------------------------

    def add_device(
        self,
        device_id: str,
        public_key: bytes,
        card: bytes,
        owner_id: str | None,
        board: str,
        firmware: str,
        state: str,
        now: float,
        card_time_s: int | None,
    ) -> None:
        self.execute(
            "INSERT INTO devices (device_id, public_key, card, owner_id, board, firmware, state,"
            " first_seen, last_seen, card_time_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (device_id, public_key, card, owner_id, board, firmware, state, now, now, card_time_s),
        )

    def update_card(
        self,
        device_id: str,
        card: bytes,
        owner_id: str | None,
        board: str,
        firmware: str,
        now: float,
        card_time_s: int | None,
    ) -> None:
        """Keep a device's newest card and its details; the card time held only grows."""
        self.execute(
            "UPDATE devices SET card=?, owner_id=?, board=?, firmware=?, last_seen=?,"
            " card_time_s=MAX(COALESCE(card_time_s, ?), COALESCE(?, card_time_s)) WHERE device_id=?",
            (card, owner_id, board, firmware, now, card_time_s, card_time_s, device_id),
        )

    def insert_messages(self, rows: list[Row]) -> None:
        """(id, device_id, kind, boot, seq, time_s, received_s, raw, body, metrics, held) rows."""
        self.executemany(MESSAGE_INSERT, rows)

    def queue_forwards(self, rows: list[Row]) -> None:
        """(route id, message id, idempotency key, next_at) rows; a forward already queued stays."""
        self.executemany(OUTBOX_INSERT, rows)

    def save_replay_windows(self, rows: list[Row]) -> None:
        """(device_id, kind, boot, top, seen) rows, replacing the stored windows."""
        self.executemany("INSERT OR REPLACE INTO replay VALUES (?,?,?,?,?)", rows)

    def mark_seen(self, rows: list[Row]) -> None:
        """(last_seen, device_id) rows."""
        self.executemany("UPDATE devices SET last_seen=? WHERE device_id=?", rows)

    def set_delivered(self, now: float, outbox_ids: list[int]) -> None:
        """The forwards of these outbox rows were delivered at `now`."""
        self.executemany("UPDATE outbox SET delivered_at=? WHERE id=?", [(now, i) for i in outbox_ids])

    def hold_until(self, next_at: float, outbox_ids: list[int]) -> None:
        """These outbox rows are not due before `next_at` (a claim's lease)."""
        self.executemany("UPDATE outbox SET next_at=? WHERE id=?", [(next_at, i) for i in outbox_ids])

    def mark_statuses(self, rows: list[Row]) -> None:
        """(last_seen, status JSON, device_id) rows."""
        self.executemany("UPDATE devices SET last_seen=?, last_status=? WHERE device_id=?", rows)

    def add_rejections(self, rows: list[Row]) -> None:
        """(at, reason, topic, device_id, detail) rows."""
        self.executemany(
            "INSERT INTO rejections (at, reason, topic, device_id, detail) VALUES (?,?,?,?,?)", rows
        )


DISK_FULL = "disk-full"
CANNOT_COMMIT = "cannot-commit"


def write_problem(error: BaseException) -> str:
    """The health reason of a failed store write: disk-full (SQLITE_FULL, PostgreSQL's 53100,
    ENOSPC) or cannot-commit."""
    if getattr(error, "sqlite_errorname", None) == "SQLITE_FULL" or "disk is full" in str(error):
        return DISK_FULL
    if getattr(error, "sqlstate", None) == "53100":  # disk_full
        return DISK_FULL
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DISK_FULL
    return CANNOT_COMMIT


class Store(SeriesQueries, ABC):
    """The store's interface: one database, safe to call from several threads."""

    dialect: Dialect
    # what a failed read or write raises (the driver's errors); callers catch these
    errors: tuple[type[BaseException], ...]
    integrity_errors: tuple[type[BaseException], ...]
    is_closed = False  # set by close(): a call after it raises one of `errors`

    @abstractmethod
    def query(self, sql: str, args: Args = ()) -> list[Row]:
        """Rows of one statement, outside any transaction of ours."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """Context manager: one transaction, committed on exit or rolled back on error."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def plan(self, sql: str, args: Args = ()) -> list[str]:
        """The plan the database would follow for one statement (EXPLAIN), one line a step."""

    def create_tables(self, script: str) -> None:
        """Create the tables and indexes of `script` (in SQLite's words) where missing."""
        with self.transaction() as db:
            for statement in statements(self.dialect.schema(script)):
                db.execute(statement)

    # --- ingest --------------------------------------------------------------------------------

    def device_keys(self) -> list[tuple[str, bytes, str, str | None]]:
        """(device_id, public key, state, owner id) of every device with a card."""
        rows = self.query("SELECT device_id, public_key, state, owner_id FROM devices")
        return [(device_id, bytes(key), state, owner) for device_id, key, state, owner in rows]

    def replay_windows(self) -> list[tuple[str, str, int, int, bytes]]:
        """(device_id, kind, boot, top, seen) of every stored replay window."""
        rows = self.query("SELECT device_id, kind, boot, top, seen FROM replay")
        return [(device_id, kind, boot, top, bytes(seen)) for device_id, kind, boot, top, seen in rows]

    def unforwarded_readings(self, device_id: str) -> list[tuple[int, float, int, int, list[str]]]:
        """(message id, received_s, boot, seq, metric names) of a device's readings no forward was
        queued for."""
        rows = self.query(
            "SELECT id, received_s, boot, seq, metrics FROM messages WHERE device_id=? AND kind='reading'"
            " AND id NOT IN (SELECT message_id FROM outbox)",
            (device_id,),
        )
        return [
            (message_id, received_s, boot, seq, _names(metrics))
            for message_id, received_s, boot, seq, metrics in rows
        ]

    # --- registry ------------------------------------------------------------------------------

    def devices(self) -> list[Device]:
        rows = self.query(f"SELECT {DEVICE_COLUMNS} FROM devices ORDER BY device_id")
        return [Device.from_row(row) for row in rows]

    def device(self, device_id: str) -> Device | None:
        rows = self.query(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id=?", (device_id,))
        return Device.from_row(rows[0]) if rows else None

    def devices_after(self, after_id: str, limit: int) -> list[Device]:
        """Up to `limit` devices whose id sorts after `after_id`, in id order (a search of the key)."""
        rows = self.query(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id>? ORDER BY device_id LIMIT ?",
            (after_id, limit),
        )
        return [Device.from_row(row) for row in rows]

    def pending_devices(self, limit: int = 1000) -> list[Device]:
        """The devices waiting for the owner's decision, in id order (the devices_state index)."""
        rows = self.query(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE state='pending' ORDER BY device_id LIMIT ?",
            (limit,),
        )
        return [Device.from_row(row) for row in rows]

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
        sql, args = _readings_sql(device_ids, metric, since_s, until_s, after_id, limit, allowed_metrics)
        out: list[dict[str, Any]] = []
        for row in self.query(sql, args):
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

    def count_readings(
        self, device_id: str | None = None, since_s: float | None = None, boot: int | None = None
    ) -> int:
        """Readings stored (of one device, received since `since_s`, of one boot, when given)."""
        sql = "SELECT COUNT(*) FROM messages WHERE kind='reading'"
        args: list[Any] = []
        for column, value in (("device_id=?", device_id), ("received_s>=?", since_s), ("boot=?", boot)):
            if value is not None:
                sql += " AND " + column
                args.append(value)
        return self.query(sql, tuple(args))[0][0]

    def latest_reading(self, device_id: str) -> tuple[str | None, bytes] | None:
        """The (body, signed bytes) of a device's newest reading, for reading_values()."""
        rows = self.query(LATEST_READING, (device_id,))
        return (rows[0][0], bytes(rows[0][1])) if rows else None

    def api_queries(
        self, device_id: str, metric: str, since_s: float, until_s: float, cursor_id: int = 0
    ) -> dict[str, tuple[str, Args]]:
        """(statement in SQLite's words, arguments) of each query the API and the console make of
        the readings, devices and series, by name: for the tests and benchmarks that check each
        searches an index and none reads a whole table. `cursor_id`: where the series indexer is."""
        step = max(1.0, (until_s - since_s) / 100)
        first, end = int(since_s // 3600), int(until_s // 3600) + 1
        return {
            "readings of a device": _readings_sql([device_id], None, None, None, 0, 100, None),
            "readings of a device, metric and time range": _readings_sql(
                [device_id], metric, since_s, until_s, 0, 100, None
            ),
            "readings after a cursor": _readings_sql(None, None, None, None, cursor_id, 100, None),
            "latest reading of a device": (LATEST_READING, (device_id,)),
            "one device": (f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id=?", (device_id,)),
            "a page of devices": (
                f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id>? ORDER BY device_id LIMIT ?",
                ("", 51),
            ),
            "pending devices": (
                f"SELECT {DEVICE_COLUMNS} FROM devices WHERE state='pending' ORDER BY device_id LIMIT ?",
                (1000,),
            ),
            "token of a session": (
                "SELECT name FROM tokens WHERE token_hash=? AND revoked IS NULL",
                ("0" * 64,),
            ),
            "series indexer": (UNINDEXED, (cursor_id, 2**62, 5000)),
            "series buckets": (
                self.dialect.series_buckets,
                (float(since_s), step, device_id, metric, float(since_s), float(until_s)),
            ),
            "series hourly buckets": (
                self.dialect.series_hourly_buckets,
                (float(first * 3600), 3600.0, device_id, metric, first, end),
            ),
            "series metrics": (METRICS, (device_id, device_id)),
        }

    def query_plans(
        self, device_id: str, metric: str, since_s: float, until_s: float, cursor_id: int = 0
    ) -> dict[str, list[str]]:
        """The plan of each of api_queries(), by name."""
        queries = self.api_queries(device_id, metric, since_s, until_s, cursor_id)
        return {name: self.plan(sql, args) for name, (sql, args) in queries.items()}

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

    def rejections_after(self, after_id: int) -> list[tuple[int, str, str, str]]:
        """(id, reason, topic, detail) of the rejections recorded after `after_id`, oldest first."""
        return self.query(
            "SELECT id, reason, topic, detail FROM rejections WHERE id>? ORDER BY id", (after_id,)
        )

    def rejection_counts(self) -> dict[str, int]:
        return dict(self.query("SELECT reason, COUNT(*) FROM rejections GROUP BY reason"))

    # --- routes --------------------------------------------------------------------------------

    def routes(self, include_inactive: bool = False) -> list[routing.Route]:
        sql = "SELECT id, name, spec, created, active, grant_bytes FROM routes"
        if not include_inactive:
            sql += " WHERE active=1"
        return [
            routing.Route.of(
                name,
                json.loads(spec),
                id=route_id,
                created=created,
                is_active=bool(active),
                grant_hex=bytes(grant).hex() if grant else None,
            )
            for route_id, name, spec, created, active, grant in self.query(sql + " ORDER BY id")
        ]

    def add_route(self, name: str, spec: dict[str, Any], grant: bytes | None) -> int:
        with self.transaction() as db:
            route_id = db.execute(
                "INSERT INTO routes (name, spec, created, grant_bytes) VALUES (?,?,?,?) RETURNING id",
                (name, json.dumps(spec), time.time(), grant),
            ).fetchone()[0]
            self._audit(db, "route-added", {"name": name, "spec": routing.without_secrets(spec)})
            return int(route_id)

    def update_route(
        self,
        name: str,
        spec: dict[str, Any],
        grant: bytes | None,
        keeps: Callable[[str, list[str]], bool] | None = None,
    ) -> int:
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
                    "SELECT o.id, m.device_id, m.metrics FROM outbox o"
                    " JOIN messages m ON m.id=o.message_id AND m.received_s=o.received_s"
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

    def due(self, now_s: float, limit: int = 200) -> list[Row]:
        """Return (outbox id, route id, idempotency key, attempts, raw, device_id) due for delivery."""
        return self.query(self.dialect.due, (now_s, limit))

    def claim_due(self, now_s: float, limit: int, lease_s: float) -> list[Row]:
        """The forwards due(), each held back from the other agents on this store for `lease_s`.

        For a $share/ group, whose agents would otherwise all deliver every due forward. A forward
        neither marked delivered nor failed within its lease (its agent died) is due again, for
        whichever agent looks first: still at least once.
        """
        with self.transaction() as db:
            rows = db.execute(self.dialect.claim_due, (now_s, limit)).fetchall()
            db.hold_until(now_s + lease_s, [r[0] for r in rows])
        return rows

    def next_due_s(self) -> float | None:
        rows = self.query("SELECT MIN(next_at) FROM outbox WHERE delivered_at IS NULL")
        return rows[0][0] if rows else None

    def mark_delivered(
        self, outbox_ids: list[int], route_name: str, terms: dict[str, Any], keys: list[str] | None = None
    ) -> None:
        """Mark forwards delivered; `keys` are their idempotency keys if the caller has them."""
        if not outbox_ids:
            return
        now = time.time()
        with self.transaction() as db:
            db.set_delivered(now, outbox_ids)
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

    def route_delivery(self, route_id: int) -> tuple[int, int, int, str | None]:
        """A route's forwards: (queued, delivered, failing, the last error of one still queued)."""
        queued, delivered, failing = self.query(
            "SELECT COALESCE(SUM(CASE WHEN delivered_at IS NULL THEN 1 ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN delivered_at IS NOT NULL THEN 1 ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN delivered_at IS NULL AND attempts > 0 THEN 1 ELSE 0 END), 0)"
            " FROM outbox WHERE route_id=?",
            (route_id,),
        )[0]
        error = self.query(
            "SELECT last_error FROM outbox WHERE route_id=? AND delivered_at IS NULL AND last_error IS NOT NULL"
            " ORDER BY id DESC LIMIT 1",
            (route_id,),
        )
        return int(queued), int(delivered), int(failing), error[0][0] if error else None

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

    def tokens(self) -> list[Token]:
        return [Token.from_row(row) for row in self.query(f"SELECT {TOKEN_COLUMNS} FROM tokens")]

    def token(self, token: str) -> Token | None:
        return self.token_by_hash(token_hash(token))

    def token_by_hash(self, hashed: str) -> Token | None:
        """The live token with this hash, or None if unknown or revoked."""
        rows = self.query(
            f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash=? AND revoked IS NULL", (hashed,)
        )
        return Token.from_row(rows[0]) if rows else None

    # --- audit ---------------------------------------------------------------------------------

    def _audit(self, db: Tx, kind: str, data: dict[str, Any]) -> None:
        db.lock_audit()
        last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, audit.GENESIS)
        at = round(time.time(), 6)
        text = audit.canonical(data)
        db.execute(
            "INSERT INTO audit (seq, at, kind, data, prev, hash) VALUES (?,?,?,?,?,?)",
            (seq, at, kind, text, prev, audit.entry_hash(prev, seq, at, kind, text)),
        )

    def audit(self, kind: str, data: dict[str, Any]) -> None:
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

    def last_audit_seq(self) -> int:
        return self.query("SELECT MAX(seq) FROM audit")[0][0] or 0

    # --- the console's sign-in links -------------------------------------------------------------

    def add_console_link(self, code_hash: str, hashed_token: str, expires_s: float, now_s: float) -> None:
        """Keep a one-time sign-in code's hash (and drop the expired ones)."""
        with self.transaction() as db:
            db.execute("DELETE FROM console_links WHERE expires_s<?", (now_s,))
            db.execute("INSERT INTO console_links VALUES (?,?,?)", (code_hash, hashed_token, expires_s))

    def take_console_link(self, code_hash: str, now_s: float) -> tuple[str, float] | None:
        """(token hash, expiry) of a sign-in code, which is used up (and the expired ones dropped)."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT token_hash, expires_s FROM console_links WHERE code_hash=?", (code_hash,)
            ).fetchone()
            db.execute("DELETE FROM console_links WHERE code_hash=? OR expires_s<?", (code_hash, now_s))
        return (row[0], row[1]) if row else None

    def audit_count(self) -> int:
        return self.query("SELECT COUNT(*) FROM audit")[0][0]

    def audit_verify(self) -> tuple[int, str] | None:
        rows = self.query("SELECT seq, at, kind, data, prev, hash FROM audit ORDER BY seq")
        return audit.first_bad(rows)

    # --- agreements (host_agent.terms.records) -----------------------------------------------------

    def agreement(self, agreement_id: str) -> AgreementRecord | None:
        rows = self.query(
            f"SELECT {', '.join(AGREEMENT_COLUMNS)} FROM agreements WHERE id=?", (agreement_id,)
        )
        return AgreementRecord.from_row(rows[0]) if rows else None

    def agreement_by_digest(self, digest: bytes) -> AgreementRecord | None:
        rows = self.query(
            f"SELECT {', '.join(AGREEMENT_COLUMNS)} FROM agreements WHERE proffer_digest=?", (digest,)
        )
        return AgreementRecord.from_row(rows[0]) if rows else None

    def agreements(self, route: str | None = None) -> list[AgreementRecord]:
        """Every record, oldest first; with `route`, the first party's records of that route."""
        sql = f"SELECT {', '.join(AGREEMENT_COLUMNS)} FROM agreements"
        args: Args = ()
        if route is not None:
            sql += " WHERE route=? AND side='first'"
            args = (route,)
        return [AgreementRecord.from_row(r) for r in self.query(sql + " ORDER BY created", args)]

    def answered_counts(self, owner_id: str) -> tuple[int, int]:
        """Proffers this agent answered: from `owner_id`, and from everyone."""
        rows = self.query(
            "SELECT SUM(CASE WHEN owner_id=? THEN 1 ELSE 0 END), COUNT(*) FROM agreements WHERE side='second'",
            (owner_id,),
        )
        return int(rows[0][0] or 0), int(rows[0][1] or 0)

    def add_agreement(
        self, record: AgreementRecord, digest: bytes, audit_kind: str, audit_data: dict[str, Any]
    ) -> None:
        """Insert a record and its audit entry in one transaction."""
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO agreements ({', '.join(AGREEMENT_COLUMNS)}, proffer_digest)"
                f" VALUES ({','.join('?' * (len(AGREEMENT_COLUMNS) + 1))})",
                (*record.columns(), digest),
            )
            self._audit(db, audit_kind, audit_data)

    def update_agreement(
        self,
        agreement_id: str,
        changes: AgreementChanges,
        expect_state: str | None,
        audit_kind: str,
        audit_data: Callable[[AgreementRecord], dict[str, Any]],
    ) -> AgreementRecord | None:
        """Change a record (only from `expect_state`, when given) and audit it, in one transaction.

        `audit_data(row)` makes the audit entry's data from the changed record. On an accept, the
        forwards held for the agreement's route wait no longer.
        """
        with self.transaction() as db:
            found = db.execute(
                f"SELECT {', '.join(AGREEMENT_COLUMNS)} FROM agreements WHERE id=?", (agreement_id,)
            ).fetchone()
            if found is None:
                return None
            record = AgreementRecord.from_row(found)
            if expect_state is not None and record.state != expect_state:
                return None
            record = record.changed(changes, time.time())
            # the column names are AgreementChanges' keys: the type admits no other
            assignments = ", ".join(f"{c}=?" for c in [*changes, "updated"])
            db.execute(
                f"UPDATE agreements SET {assignments} WHERE id=?",
                (*changes.values(), record.updated, agreement_id),
            )
            if changes.get("state") == "accepted":
                db.execute(
                    "UPDATE outbox SET next_at=? WHERE delivered_at IS NULL AND route_id IN"
                    " (SELECT id FROM routes WHERE name=? AND active=1)",
                    (time.time(), record.route),
                )
            self._audit(db, audit_kind, audit_data(record))
        return record

    def postpone_forwards(self, outbox_ids: list[int], next_at: float) -> None:
        """Leave forwards queued, not due before `next_at`."""
        if outbox_ids:
            with self.transaction() as db:
                db.executemany("UPDATE outbox SET next_at=? WHERE id=?", [(next_at, i) for i in outbox_ids])

    def drop_forwards(self, outbox_ids: list[int], audit_kind: str, audit_data: dict[str, Any]) -> None:
        """Delete forwards not yet delivered, with an audit entry saying why, in one transaction."""
        if outbox_ids:
            with self.transaction() as db:
                db.executemany(
                    "DELETE FROM outbox WHERE id=? AND delivered_at IS NULL", [(i,) for i in outbox_ids]
                )
                self._audit(db, audit_kind, audit_data)
