"""The agreements table: each party's record of a proffer and what came of it (kept by the store).

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
from host_agent.store.base import AGREEMENT_PARTS, Store
from host_agent.terms import policy

PARTS = AGREEMENT_PARTS
HOLD_S = 3600.0  # a held forward is looked at again this late, or as soon as an agreement arrives


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
    return store.agreement(agreement_id)


def by_digest(store: Store, digest: bytes) -> dict[str, Any] | None:
    return store.agreement_by_digest(digest)


def all_records(store: Store, route: str | None = None) -> list[dict[str, Any]]:
    return store.agreements(route)


def counts(store: Store, owner_id: str) -> tuple[int, int]:
    """Proffers this agent answered: from `owner_id`, and from everyone."""
    return store.answered_counts(owner_id)


def add(store: Store, row: dict[str, Any], audit_kind: str, **extra: Any) -> dict[str, Any]:
    """Insert a new record and its audit entry in one transaction."""
    now = time.time()
    row = dict(row, created=now, updated=now)
    for part in PARTS:
        row.setdefault(part, None)
    store.add_agreement(row, terms.digest(row["proffer"]), audit_kind, _audit_data(row, **extra))
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
    return store.update_agreement(
        agreement_id, changes, expect_state, audit_kind, lambda row: _audit_data(row, **extra)
    )


def hold(store: Store, outbox_ids: list[int]) -> None:
    """Leave forwards queued, out of the way until an agreement arrives (or HOLD_S passes)."""
    store.postpone_forwards(outbox_ids, time.time() + HOLD_S)


def withhold(store: Store, outbox_ids: list[int], route: str, why: str) -> None:
    """Drop forwards no agreement will ever carry, and audit how many and why."""
    store.drop_forwards(
        outbox_ids, "terms-withheld", {"route": route, "forwards": len(outbox_ids), "why": why}
    )
