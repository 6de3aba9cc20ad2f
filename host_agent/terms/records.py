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
from typing import cast

from fp import cbor, terms
from fp.errors import ProtocolError
from host_agent.store.base import Store
from host_agent.store.records import AGREEMENT_PARTS, AgreementChanges, AgreementRecord
from host_agent.terms import policy, signed

__all__ = [
    "HOLD_S",
    "PARTS",
    "STATE_OF",
    "Checked",
    "add",
    "all_records",
    "by_digest",
    "check_record",
    "counts",
    "get",
    "hold",
    "new",
    "parse_record",
    "record_bytes",
    "update",
    "withhold",
]

PARTS = AGREEMENT_PARTS
# the state a record takes from the answer's decision (the owner may still refuse an alternative)
STATE_OF = {"accept": "accepted", "alternative": "alternative", "decline": "declined"}
HOLD_S = 3600.0  # a held forward is looked at again this late, or as soon as an agreement arrives


def record_bytes(record: AgreementRecord) -> bytes:
    """The record both parties hold: the signed messages so far, as deterministic CBOR."""
    return cbor.encode(record.parts())


def parse_record(data: bytes) -> dict[str, bytes]:
    """The messages of a record file; ValueError when it is not one."""
    value = cbor.decode(data)
    if not isinstance(value, dict):
        raise ValueError("not an agreement record (a CBOR map holding at least a proffer)")
    found = cast("dict[object, object]", value)  # decoded CBOR: each part checked below
    if not isinstance(found.get("proffer"), bytes):
        raise ValueError("not an agreement record (a CBOR map holding at least a proffer)")
    parts: dict[str, bytes] = {}
    for key, part in found.items():
        if not isinstance(key, str) or key not in PARTS or not isinstance(part, bytes):
            raise ValueError(f"unexpected part {key!r} in an agreement record")
        parts[key] = part
    return parts


@dataclass(slots=True, frozen=True)
class Checked:
    """A record whose signatures and bindings hold: what a third party may rely on (fp.terms'
    checked messages, as `firstparty verify` reads them)."""

    proffer: terms.Signed
    answer: terms.Signed
    termination: terms.Signed | None
    window: policy.InForce


def check_record(data: bytes) -> Checked:
    """Check a record as a third party: the owner's proffer, the recipient's countersignature over
    its exact bytes, and any termination; ProtocolError (or ValueError for a non-record) otherwise."""
    parts = parse_record(data)
    proffer = signed.parse_proffer(parts["proffer"])
    if "answer" not in parts:
        raise ProtocolError("out-of-terms", "the proffer was never answered")
    answer = signed.parse_answer(parts["answer"], proffer)
    if answer.body.decision != "accept":
        raise ProtocolError("out-of-terms", f"the recipient answered {answer.body.decision}, not accept")
    termination = None
    if "termination" in parts:
        termination = signed.parse_termination(parts["termination"], proffer)
    window = policy.in_force(proffer.body, termination.time_s if termination else None)
    return Checked(proffer.checked, answer.checked, termination.checked if termination else None, window)


def _audit_data(record: AgreementRecord, **extra: object) -> dict[str, object]:
    return {
        "agreement": record.id,
        "side": record.side,
        "peer": record.peer,
        "route": record.route,
        "state": record.state,
        "record_sha256": hashlib.sha256(record_bytes(record)).hexdigest(),
        **extra,
    }


def get(store: Store, agreement_id: str) -> AgreementRecord | None:
    return store.agreement(agreement_id)


def by_digest(store: Store, digest: bytes) -> AgreementRecord | None:
    return store.agreement_by_digest(digest)


def all_records(store: Store, route: str | None = None) -> list[AgreementRecord]:
    return store.agreements(route)


def counts(store: Store, owner_id: str) -> tuple[int, int]:
    """Proffers this agent answered: from `owner_id`, and from everyone."""
    return store.answered_counts(owner_id)


def new(
    agreement_id: str,
    side: str,
    peer: str,
    route: str,
    state: str,
    proffer: bytes,
    owner_id: str,
    answer: bytes | None = None,
) -> AgreementRecord:
    """A record made now, of a proffer (and its answer, on the second side)."""
    now = time.time()
    return AgreementRecord(
        agreement_id, side, peer, route, state, proffer, answer, None, None, owner_id, now, now
    )


def add(store: Store, record: AgreementRecord, audit_kind: str, **extra: object) -> AgreementRecord:
    """Insert a new record and its audit entry in one transaction."""
    store.add_agreement(record, signed.digest(record.proffer), audit_kind, _audit_data(record, **extra))
    return record


def update(
    store: Store,
    agreement_id: str,
    changes: AgreementChanges,
    audit_kind: str,
    expect_state: str | None,
    **extra: object,
) -> AgreementRecord | None:
    """Change a record (only from `expect_state`, when given) and audit it, in one transaction."""
    return store.update_agreement(
        agreement_id, changes, expect_state, audit_kind, lambda record: _audit_data(record, **extra)
    )


def hold(store: Store, outbox_ids: list[int]) -> None:
    """Leave forwards queued, out of the way until an agreement arrives (or HOLD_S passes)."""
    store.postpone_forwards(outbox_ids, time.time() + HOLD_S)


def withhold(store: Store, outbox_ids: list[int], route: str, why: str) -> None:
    """Drop forwards no agreement will ever carry, and audit how many and why."""
    store.drop_forwards(
        outbox_ids, "terms-withheld", {"route": route, "forwards": len(outbox_ids), "why": why}
    )
