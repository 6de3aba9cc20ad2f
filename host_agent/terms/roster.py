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
from typing import cast

from typing_extensions import TypedDict  # pydantic reads a TypedDict of typing's only from Python 3.12

from fp import cbor
from host_agent.config import TermsConfig
from host_agent.errors import UserError

__all__ = [
    "BASELINE",
    "ONWARD_SHARING",
    "ROSTER_PATH",
    "Agreement",
    "AgreementEntry",
    "Roster",
    "check_terms_config",
    "load",
    "parse",
    "parse_ref",
]

ROSTER_PATH = Path(__file__).with_name("roster.json")
ONWARD_SHARING = ("none", "same-terms")
BASELINE = "service-only@1"  # "only to deliver the service I use": what a vendor should accept
# each key of an entry, and the JSON types its value may have
_FIELDS: dict[str, type | tuple[type, ...]] = {
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


class AgreementEntry(TypedDict):
    """An entry of roster.json (and of GET /terms/roster): what a proffer's digest is taken over."""

    id: str
    version: int
    title: str
    summary: str
    purposes: list[str]
    max_retention_days: int | None
    onward_sharing: str
    model_training: bool
    delete_at_expiry: bool
    owner_may_retrieve: bool


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

    @classmethod
    def of(cls, entry: AgreementEntry) -> Agreement:
        return cls(
            entry["id"],
            entry["version"],
            entry["title"],
            entry["summary"],
            tuple(entry["purposes"]),
            entry["max_retention_days"],
            entry["onward_sharing"],
            entry["model_training"],
            entry["delete_at_expiry"],
            entry["owner_may_retrieve"],
        )

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def as_dict(self) -> AgreementEntry:
        return {
            "id": self.id,
            "version": self.version,
            "title": self.title,
            "summary": self.summary,
            "purposes": list(self.purposes),
            "max_retention_days": self.max_retention_days,
            "onward_sharing": self.onward_sharing,
            "model_training": self.model_training,
            "delete_at_expiry": self.delete_at_expiry,
            "owner_may_retrieve": self.owner_may_retrieve,
        }

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


def parse(value: object, source: str) -> Roster:
    """Validate a roster mapping (JSON); every problem names the file, the entry and the key."""
    problems: list[str] = []
    if not isinstance(value, dict):
        raise UserError(f"{source}: a roster is a map with an 'agreements' list")
    data = cast("dict[str, object]", value)  # JSON from a file: each value checked below
    entries, name, version = data.get("agreements"), data.get("roster"), data.get("version")
    if not isinstance(entries, list):
        raise UserError(f"{source}: a roster is a map with an 'agreements' list")
    if not isinstance(name, str) or not isinstance(version, int):
        problems.append(f"{source}: 'roster' must be text and 'version' an integer")
    agreements: list[Agreement] = []
    seen: set[tuple[str, int]] = set()
    for index, item in enumerate(cast("list[object]", entries)):  # JSON: each entry checked below
        where = f"{source}: agreements[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be a map")
            continue
        entry = cast("dict[str, object]", item)  # JSON: each key and value checked below
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
        # every type checked just above against _FIELDS: the entry is an AgreementEntry
        checked = cast(AgreementEntry, entry)
        if checked["onward_sharing"] not in ONWARD_SHARING:
            problems.append(
                f"{where}.onward_sharing: expected one of {ONWARD_SHARING}, found {checked['onward_sharing']!r}"
            )
        purposes = cast("list[object]", checked["purposes"])  # a JSON list: its items checked here
        if not purposes or not all(isinstance(p, str) and p for p in purposes):
            problems.append(f"{where}.purposes: expected a list of names, found {purposes!r}")
        if (checked["id"], checked["version"]) in seen:
            problems.append(f"{where}: {checked['id']}@{checked['version']} appears twice")
        seen.add((checked["id"], checked["version"]))
        agreements.append(Agreement.of(checked))
    if problems or not isinstance(name, str) or not isinstance(version, int):
        raise UserError("; ".join(problems))
    return Roster(name, version, tuple(agreements))


@cache
def load(path: Path = ROSTER_PATH) -> Roster:
    """The roster in `path` (the project's own by default), read and validated once."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the roster {path}: {error}") from None
    return parse(data, str(path))


def check_terms_config(source: str, terms: TermsConfig) -> None:
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
