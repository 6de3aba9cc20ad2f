"""The records the store gives the modules above it: typed and frozen, not `dict[str, Any]`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DEVICE_COLUMNS", "TOKEN_COLUMNS", "Args", "Device", "Row", "Token"]

Row = tuple[Any, ...]  # a row as the drivers give it
Args = tuple[Any, ...] | list[Any]  # the parameters of one statement

# the tokens columns a Token is made of, in Token.from_row's order
TOKEN_COLUMNS = "name, scope, devices, metrics, account, created, revoked"

# the devices columns a Device is made of, in Device.from_row's order
DEVICE_COLUMNS = "device_id, owner_id, name, board, firmware, state, first_seen, last_seen, last_status"


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
