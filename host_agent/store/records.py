"""The records the store gives the modules above it: typed and frozen, not `dict[str, Any]`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, TypedDict

__all__ = [
    "AGREEMENT_COLUMNS",
    "AGREEMENT_PARTS",
    "DEVICE_COLUMNS",
    "TOKEN_COLUMNS",
    "AgreementChanges",
    "AgreementRecord",
    "Args",
    "Device",
    "Row",
    "Token",
]

Row = tuple[Any, ...]  # a row as the drivers give it
Args = tuple[Any, ...] | list[Any]  # the parameters of one statement

# the tokens columns a Token is made of, in Token.from_row's order
TOKEN_COLUMNS = "name, scope, devices, metrics, account, created, revoked"

# the devices columns a Device is made of, in Device.from_row's order
DEVICE_COLUMNS = "device_id, owner_id, name, board, firmware, state, first_seen, last_seen, last_status"

# the signed parts of an agreement's record (host_agent.terms.records), and the columns an
# AgreementRecord is made of, in its fields' order
AGREEMENT_PARTS = ("proffer", "answer", "termination", "termination_ack")
AGREEMENT_COLUMNS = (
    "id",
    "side",
    "peer",
    "route",
    "state",
    *AGREEMENT_PARTS,
    "owner_id",
    "created",
    "updated",
)


@dataclass(slots=True, frozen=True)
class Device:
    """A device of the registry: its card's details, its state and its last signed status."""

    device_id: str
    owner_id: str | None  # the owner its card claims it for, if any
    name: str | None  # the owner's name for it
    board: str | None
    firmware: str | None
    state: str  # pending, accepted or rejected
    first_seen: float
    last_seen: float | None
    status: dict[str, Any] | None  # its last signed status, as the device sent it (decoded JSON)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Device:
        """A row of DEVICE_COLUMNS."""
        device_id, owner_id, name, board, firmware, state, first_seen, last_seen, status = row
        return cls(
            device_id,
            owner_id,
            name,
            board,
            firmware,
            state,
            first_seen,
            last_seen,
            json.loads(status) if status else None,
        )

    @property
    def is_online(self) -> bool:
        """Its last signed status says it is online (its will says "offline")."""
        return (self.status or {}).get("state") == "online"

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape (CLI `devices show`)."""
        return asdict(self)


@dataclass(slots=True, frozen=True)
class Token:
    """An API token as the store keeps it (its hash alone: the token itself is shown once)."""

    name: str
    scope: str  # read or admin
    devices: list[str] | None  # the devices it may see; None: every device
    metrics: list[str] | None  # the metrics it may read; None: every metric
    account: str | None  # the owner whose devices alone it sees (a vendor's account token)
    created: float
    revoked: float | None  # when it was revoked; None: live

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Token:
        """A row of TOKEN_COLUMNS."""
        name, scope, devices, metrics, account, created, revoked = row
        return cls(
            name,
            scope,
            json.loads(devices) if devices else None,
            json.loads(metrics) if metrics else None,
            account,
            created,
            revoked,
        )

    @property
    def is_live(self) -> bool:
        return self.revoked is None


class AgreementChanges(TypedDict, total=False):
    """What a step of an agreement changes in its record (host_agent.terms.records.update)."""

    state: str
    answer: bytes
    termination: bytes
    termination_ack: bytes


@dataclass(slots=True, frozen=True)
class AgreementRecord:
    """A party's record of one proffer and what came of it (docs/agreements.md): the signed
    messages so far, exactly as they were signed, and where the agreement stands."""

    id: str  # the proffer's nonce, in hex
    side: str  # first (this agent proffered it) or second (this agent answered it)
    peer: str  # first side: the recipient's API or mqtt:// broker ("" offline); second: the owner id
    route: str  # the route it covers ("" for none: the vendor's default stream)
    state: str  # proffered, accepted, alternative, declined, refused, terminated or expired
    proffer: bytes
    answer: bytes | None
    termination: bytes | None
    termination_ack: bytes | None
    owner_id: str  # who proffered it
    created: float
    updated: float

    @classmethod
    def from_row(cls, row: Row) -> AgreementRecord:
        """A row of AGREEMENT_COLUMNS (a driver may give the signed parts as memoryview)."""
        id_, side, peer, route, state, proffer, answer, termination, ack, owner_id, created, updated = row
        return cls(
            id_,
            side,
            peer,
            route,
            state,
            bytes(proffer),
            _bytes_or_none(answer),
            _bytes_or_none(termination),
            _bytes_or_none(ack),
            owner_id,
            created,
            updated,
        )

    def columns(self) -> Row:
        """Its values in AGREEMENT_COLUMNS' order."""
        return tuple(getattr(self, column) for column in AGREEMENT_COLUMNS)

    def parts(self) -> dict[str, bytes]:
        """The signed messages it holds so far, by part name (AGREEMENT_PARTS' order)."""
        found = {"proffer": self.proffer, "answer": self.answer}
        found |= {"termination": self.termination, "termination_ack": self.termination_ack}
        return {part: data for part, data in found.items() if data is not None}

    def changed(self, changes: AgreementChanges, updated: float) -> AgreementRecord:
        return replace(self, **changes, updated=updated)


def _bytes_or_none(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)
