"""The roster of standard agreements (roster.json), validated once at load.

Each agreement has a stable id and version, a one-paragraph summary for people and terms for
machines: allowed purposes, the longest retention, onward sharing ("none" or "same-terms"),
whether models may be trained on the data, deletion at the end, and the owner's right to get back
what the recipient holds. A proffer names an entry by [id, version] and carries the SHA-256 of
the entry's canonical bytes, so both parties provably mean the same text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fp import cbor
from host_agent.errors import UserError

ROSTER_PATH = Path(__file__).with_name("roster.json")
ONWARD_SHARING = ("none", "same-terms")
BASELINE = "service-only@1"  # "only to deliver the service I use": what a vendor should accept
_FIELDS: dict[str, Any] = {
    "id": str,
    "version": int,
    "title": str,
    "summary": str,
    "purposes": list,
    "max_retention_days": (int, type(None)),
    "onward_sharing": str,
    "model_training": bool,
    "delete_at_expiry": bool,
    "owner_may_retrieve": bool,
}


@dataclass(slots=True, frozen=True)
class Agreement:
    """One standard agreement of the roster."""

    id: str
    version: int
    title: str
    summary: str
    purposes: tuple[str, ...]
    max_retention_days: int | None
    onward_sharing: str
    model_training: bool
    delete_at_expiry: bool
    owner_may_retrieve: bool

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {name: list(v) if isinstance(v := getattr(self, name), tuple) else v for name in _FIELDS}

    @property
    def digest(self) -> bytes:
        """SHA-256 of the entry as deterministic CBOR: what a proffer binds."""
        return hashlib.sha256(cbor.encode(self.as_dict())).digest()


@dataclass(slots=True, frozen=True)
class Roster:
    name: str
    version: int
    agreements: tuple[Agreement, ...]

    def find(self, agreement_id: str, version: int) -> Agreement | None:
        for agreement in self.agreements:
            if agreement.id == agreement_id and agreement.version == version:
                return agreement
        return None

    def get(self, ref: str) -> Agreement:
        """The entry named `id@version`, or UserError naming the roster's refs."""
        agreement_id, version = parse_ref(ref)
        found = self.find(agreement_id, version)
        if found is None:
            known = ", ".join(a.ref for a in self.agreements)
            raise UserError(f"{ref!r} is not in the roster (known: {known})")
        return found


def parse_ref(ref: str) -> tuple[str, int]:
    """`service-only@1` -> ("service-only", 1); UserError otherwise."""
    agreement_id, _, version = str(ref).rpartition("@")
    if not agreement_id or not version.isdigit():
        raise UserError(f"an agreement is named id@version (for example {BASELINE}), found {ref!r}")
    return agreement_id, int(version)


def parse(data: dict[str, Any], source: str) -> Roster:
    """Validate a roster mapping; every problem names the file, the entry and the key."""
    problems: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("agreements"), list):
        raise UserError(f"{source}: a roster is a map with an 'agreements' list")
    if not isinstance(data.get("roster"), str) or not isinstance(data.get("version"), int):
        problems.append(f"{source}: 'roster' must be text and 'version' an integer")
    agreements: list[Agreement] = []
    seen: set[tuple[str, int]] = set()
    for index, entry in enumerate(data["agreements"]):
        where = f"{source}: agreements[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} must be a map")
            continue
        for key in entry:
            if key not in _FIELDS:
                problems.append(f"{where}: unknown key {key!r}")
        bad = False
        for key, kind in _FIELDS.items():
            value = entry.get(key)
            if key not in entry or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                problems.append(f"{where}.{key}: expected {kind}, found {value!r}")
                bad = True
        if bad:
            continue
        if entry["onward_sharing"] not in ONWARD_SHARING:
            problems.append(
                f"{where}.onward_sharing: expected one of {ONWARD_SHARING}, found {entry['onward_sharing']!r}"
            )
        if not entry["purposes"] or not all(isinstance(p, str) and p for p in entry["purposes"]):
            problems.append(f"{where}.purposes: expected a list of names, found {entry['purposes']!r}")
        if (entry["id"], entry["version"]) in seen:
            problems.append(f"{where}: {entry['id']}@{entry['version']} appears twice")
        seen.add((entry["id"], entry["version"]))
        agreements.append(Agreement(**{**entry, "purposes": tuple(entry["purposes"])}))
    if problems:
        raise UserError("; ".join(problems))
    return Roster(data["roster"], data["version"], tuple(agreements))


@cache
def load(path: Path = ROSTER_PATH) -> Roster:
    """The roster in `path` (the project's own by default), read and validated once."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the roster {path}: {error}") from None
    return parse(data, str(path))


def check_terms_config(source: str, terms: Any) -> None:
    """Every agreement a config's [terms] section names must be in the roster (roster.json).

    `terms` is the config's TermsConfig; its file is `source`. Run where a configuration starts an
    agent or a verb (TermsDesk, the CLI's load_config), above the config module, which knows no roster.
    """
    known = load()
    refs = [("terms.alternative", terms.alternative), ("terms.vendor_agreement", terms.vendor_agreement)]
    refs += [(f"terms.accepts[{i}]", ref) for i, ref in enumerate(terms.accepts or [])]
    for key, ref in refs:
        if ref is None:
            continue
        try:
            known.get(ref)
        except UserError as error:
            raise UserError(f"{source}: {key}: {error}") from None
