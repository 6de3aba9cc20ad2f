"""One queued forward as the outbox reads it from the store, and the error of a destination."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeliveryError", "Forward"]


class DeliveryError(Exception):
    """A destination did not take a forward; the outbox retries later."""


@dataclass(slots=True, frozen=True)
class Forward:
    """A reading due at one route: its signed bytes unchanged, and the key a recipient dedupes on."""

    outbox_id: int
    route_id: int
    idempotency_key: str  # <device>:<boot>:<seq>
    attempts: int
    raw: bytes
    device_id: str

    @classmethod
    def from_row(cls, row: tuple[int, int, str, int, bytes, str]) -> Forward:
        """A row of Store.due / Store.claim_due: (id, route_id, key, attempts, raw, device_id)."""
        outbox_id, route_id, key, attempts, raw, device_id = row
        return cls(outbox_id, route_id, key, attempts, bytes(raw), device_id)
