"""The decisions of first-party terms, as functions of values (no I/O, no clock).

- `check_proffer`: does a proffer's body name a roster entry, with parameters that entry allows?
- `evaluate`: what a party's published policy answers to a proffer (accept, one alternative, decline).
- `covers`: does an agreement in force carry this reading of this device, now?
"""

from __future__ import annotations

from dataclasses import dataclass

from typing_extensions import TypedDict  # pydantic reads a TypedDict of typing's only from Python 3.12

from fp.errors import ProtocolError
from host_agent.terms.roster import Agreement, Roster, parse_ref
from host_agent.terms.signed import ProfferTerms

__all__ = [
    "Decision",
    "EntryOut",
    "InForce",
    "Policy",
    "PolicyOut",
    "RosterNameOut",
    "check_proffer",
    "covers",
    "evaluate",
    "in_force",
    "is_ended",
    "policy_from",
]


class EntryOut(TypedDict):
    """A roster entry as a published policy names it."""

    id: str
    version: int
    digest_hex: str


class RosterNameOut(TypedDict):
    name: str
    version: int


class PolicyOut(TypedDict):
    """A policy as /.well-known/firstparty-terms shows it (JSON)."""

    roster: RosterNameOut
    accepts: list[EntryOut]
    alternative: EntryOut | None


@dataclass(slots=True, frozen=True)
class Policy:
    """What a party accepts: roster refs (`id@version`), and the one alternative it offers, if any."""

    accepts: tuple[str, ...]
    alternative: str | None = None

    def published(self, roster: Roster) -> PolicyOut:
        """The policy as /.well-known/firstparty-terms shows it: each entry with its digest."""

        def entry(ref: str) -> EntryOut:
            agreement = roster.get(ref)
            return {"id": agreement.id, "version": agreement.version, "digest_hex": agreement.digest.hex()}

        return {
            "roster": {"name": roster.name, "version": roster.version},
            "accepts": [entry(ref) for ref in self.accepts],
            "alternative": entry(self.alternative) if self.alternative else None,
        }


def policy_from(accepts: list[str], alternative: str | None, roster: Roster) -> Policy:
    """A policy whose every ref is in the roster (UserError naming the bad one otherwise)."""
    for ref in [*accepts, *([alternative] if alternative else [])]:
        roster.get(ref)
    return Policy(tuple(accepts), alternative or None)


@dataclass(slots=True, frozen=True)
class Decision:
    decision: str  # accept | alternative | decline
    alternative: tuple[str, int] | None
    reason: str


def check_proffer(roster: Roster, body: ProfferTerms) -> Agreement:
    """The roster entry a proffer names, its parameters within that entry; ProtocolError otherwise."""
    agreement = roster.find(body.agreement_id, body.version)
    if agreement is None:
        raise ProtocolError("not-in-roster", f"{body.ref} is not in the roster")
    if body.digest != agreement.digest:
        raise ProtocolError("not-in-roster", f"{agreement.ref}: the proffer binds another text of it")
    if body.purpose not in agreement.purposes:
        raise ProtocolError(
            "out-of-terms",
            f"purpose {body.purpose!r} is not one of {agreement.ref}'s {list(agreement.purposes)}",
        )
    retention = body.retention_days
    limit = agreement.max_retention_days
    if limit is not None and (retention is None or retention > limit):
        raise ProtocolError("out-of-terms", f"retention {retention} days exceeds {agreement.ref}'s {limit}")
    return agreement


def evaluate(policy: Policy, roster: Roster, body: ProfferTerms) -> Decision:
    """Answer a proffer by policy: accept what it accepts, else offer its one alternative, else decline."""
    try:
        agreement = check_proffer(roster, body)
    except ProtocolError as error:
        return Decision("decline", None, f"{error.reason}: {error.detail}")
    if agreement.ref in policy.accepts:
        return Decision("accept", None, f"{agreement.ref} is one this party accepts")
    if policy.alternative and policy.alternative != agreement.ref:
        return Decision(
            "alternative", parse_ref(policy.alternative), f"{agreement.ref} is not accepted; offered instead"
        )
    return Decision("decline", None, f"{agreement.ref} is not one this party accepts")


@dataclass(slots=True, frozen=True)
class InForce:
    """What an accepted agreement lets through: its devices, metrics and window (end: until, or termination)."""

    devices: tuple[str, ...]
    metrics: tuple[str, ...]
    from_s: int
    end_s: int


def in_force(body: ProfferTerms, terminated_s: int | None) -> InForce:
    """What a proffer's terms carry once accepted: until its end, or its termination if sooner."""
    end = body.until_s if terminated_s is None else min(body.until_s, terminated_s)
    return InForce(body.devices, body.metrics, body.from_s, end)


def covers(terms: InForce, device_id: str, metric_names: list[str], reading_s: float, now_s: float) -> bool:
    """True when the agreement carries this reading now: in its window (made and sent), its device, its metrics.

    A forward is the whole signed reading, so every metric in it must be one the agreement names.
    """
    if not (terms.from_s <= now_s < terms.end_s and terms.from_s <= reading_s < terms.end_s):
        return False
    if "*" not in terms.devices and device_id not in terms.devices:
        return False
    return "*" in terms.metrics or (bool(metric_names) and all(n in terms.metrics for n in metric_names))


def is_ended(terms: InForce, now_s: float) -> bool:
    return now_s >= terms.end_s
