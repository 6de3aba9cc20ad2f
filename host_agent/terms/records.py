"""The agreements table: each party's record of a proffer and what came of it (a thin SQLite adapter).

Both parties keep the same signed messages (proffer, answer, termination, its acknowledgement);
`record_bytes` packs them as deterministic CBOR, so the two records are byte-identical and either
side can hand its copy to a third party in a dispute. Every step is written in the same
transaction as a hash-chained audit entry that commits to the record's SHA-256.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from fp import cbor, terms
from fp.errors import ProtocolError
from host_agent import wire
from host_agent.store.sqlite import Store
from host_agent.terms import policy

SCHEMA = """
CREATE TABLE IF NOT EXISTS agreements (
  id TEXT PRIMARY KEY, side TEXT NOT NULL, peer TEXT NOT NULL, route TEXT NOT NULL,
  state TEXT NOT NULL, proffer BLOB NOT NULL, proffer_digest BLOB NOT NULL, answer BLOB,
  termination BLOB, termination_ack BLOB, owner_id TEXT NOT NULL, created REAL, updated REAL);
CREATE INDEX IF NOT EXISTS agreements_route ON agreements (route, side);
CREATE UNIQUE INDEX IF NOT EXISTS agreements_digest ON agreements (proffer_digest);
"""
PARTS = ("proffer", "answer", "termination", "termination_ack")
COLUMNS = ("id", "side", "peer", "route", "state", *PARTS, "owner_id", "created", "updated")
HOLD_S = 3600.0  # a held forward is looked at again this late, or as soon as an agreement arrives


def install(store: Store) -> None:
    """Create the table on the agent's store (idempotent)."""
    with store.lock:
        store.db.executescript(SCHEMA)


def record_bytes(row: dict[str, Any]) -> bytes:
    """The record both parties hold: the signed messages so far, as deterministic CBOR."""
    return cbor.encode({part: row[part] for part in PARTS if row.get(part) is not None})


def parse_record(data: bytes) -> dict[str, bytes]:
    """The messages of a record file; ValueError when it is not one."""
    value = cbor.decode(data)
    if not isinstance(value, dict) or not isinstance(value.get("proffer"), bytes):
        raise ValueError("not an agreement record (a CBOR map holding at least a proffer)")
    for key, part in value.items():
        if key not in PARTS or not isinstance(part, bytes):
            raise ValueError(f"unexpected part {key!r} in an agreement record")
    return value


@dataclass(slots=True, frozen=True)
class Checked:
    """A record whose signatures and bindings hold: what a third party may rely on."""

    proffer: terms.Signed
    answer: terms.Signed
    termination: terms.Signed | None
    window: policy.InForce


def check_record(data: bytes) -> Checked:
    """Check a record as a third party: the owner's proffer, the recipient's countersignature over
    its exact bytes, and any termination; ProtocolError (or ValueError for a non-record) otherwise."""
    parts = parse_record(data)
    proffer = terms.parse_proffer(parts["proffer"], wire.nacl_verify)
    if "answer" not in parts:
        raise ProtocolError("out-of-terms", "the proffer was never answered")
    answer = terms.parse_answer(parts["answer"], proffer, wire.nacl_verify)
    if answer.body["decision"] != "accept":
        raise ProtocolError("out-of-terms", f"the recipient answered {answer.body['decision']}, not accept")
    termination = None
    if "termination" in parts:
        termination = terms.parse_termination(parts["termination"], proffer, wire.nacl_verify)
    window = policy.in_force(proffer.body, termination.time_s if termination else None)
    return Checked(proffer, answer, termination, window)


def _row(values: tuple) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(COLUMNS, values, strict=True))
    for part in PARTS:
        if row[part] is not None:
            row[part] = bytes(row[part])
    return row


def _audit_data(row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "agreement": row["id"],
        "side": row["side"],
        "peer": row["peer"],
        "route": row["route"],
        "state": row["state"],
        "record_sha256": hashlib.sha256(record_bytes(row)).hexdigest(),
        **extra,
    }


def get(store: Store, agreement_id: str) -> dict[str, Any] | None:
    rows = store.query(f"SELECT {', '.join(COLUMNS)} FROM agreements WHERE id=?", (agreement_id,))
    return _row(rows[0]) if rows else None


def by_digest(store: Store, digest: bytes) -> dict[str, Any] | None:
    rows = store.query(f"SELECT {', '.join(COLUMNS)} FROM agreements WHERE proffer_digest=?", (digest,))
    return _row(rows[0]) if rows else None


def all_records(store: Store, route: str | None = None) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(COLUMNS)} FROM agreements"
    args: tuple = ()
    if route is not None:
        sql += " WHERE route=? AND side='first'"
        args = (route,)
    return [_row(r) for r in store.query(sql + " ORDER BY created", args)]


def counts(store: Store, owner_id: str) -> tuple[int, int]:
    """Proffers this agent answered: from `owner_id`, and from everyone."""
    rows = store.query(
        "SELECT SUM(owner_id=?), COUNT(*) FROM agreements WHERE side='second'",
        (owner_id,),
    )
    return int(rows[0][0] or 0), int(rows[0][1] or 0)


def add(store: Store, row: dict[str, Any], audit_kind: str, **extra: Any) -> dict[str, Any]:
    """Insert a new record and its audit entry in one transaction."""
    now = time.time()
    row = dict(row, created=now, updated=now)
    for part in PARTS:
        row.setdefault(part, None)
    with store.transaction() as db:
        db.execute(
            f"INSERT INTO agreements ({', '.join(COLUMNS)}, proffer_digest) VALUES ({','.join('?' * (len(COLUMNS) + 1))})",
            (*(row[c] for c in COLUMNS), terms.digest(row["proffer"])),
        )
        store._audit(db, audit_kind, _audit_data(row, **extra))
    return row


def update(
    store: Store,
    agreement_id: str,
    changes: dict[str, Any],
    audit_kind: str,
    expect_state: str | None,
    **extra: Any,
) -> dict[str, Any] | None:
    """Change a record (only from `expect_state`, when given) and audit it, in one transaction."""
    with store.transaction() as db:
        found = db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM agreements WHERE id=?", (agreement_id,)
        ).fetchone()
        if found is None:
            return None
        row = _row(found)
        if expect_state is not None and row["state"] != expect_state:
            return None
        row.update(changes, updated=time.time())
        assignments = ", ".join(f"{c}=?" for c in [*changes, "updated"])
        db.execute(
            f"UPDATE agreements SET {assignments} WHERE id=?",
            (*changes.values(), row["updated"], agreement_id),
        )
        if changes.get("state") in ("accepted",):
            # forwards held for this route wait no longer
            db.execute(
                "UPDATE outbox SET next_at=? WHERE delivered_at IS NULL AND route_id IN"
                " (SELECT id FROM routes WHERE name=? AND active=1)",
                (time.time(), row["route"]),
            )
        store._audit(db, audit_kind, _audit_data(row, **extra))
    return row


def hold(store: Store, outbox_ids: list[int]) -> None:
    """Leave forwards queued, out of the way until an agreement arrives (or HOLD_S passes)."""
    if outbox_ids:
        with store.transaction() as db:
            next_at = time.time() + HOLD_S
            db.executemany("UPDATE outbox SET next_at=? WHERE id=?", [(next_at, i) for i in outbox_ids])


def withhold(store: Store, outbox_ids: list[int], route: str, why: str) -> None:
    """Drop forwards no agreement will ever carry, and audit how many and why."""
    if outbox_ids:
        with store.transaction() as db:
            db.executemany(
                "DELETE FROM outbox WHERE id=? AND delivered_at IS NULL", [(i,) for i in outbox_ids]
            )
            store._audit(db, "terms-withheld", {"route": route, "forwards": len(outbox_ids), "why": why})
