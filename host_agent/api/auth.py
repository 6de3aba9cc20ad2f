"""Who calls the API: the bearer token's holder, its scope, and what it may see.

A `read` token sees GET endpoints limited to its devices and metrics when it names them; an
`admin` token may change things too. FastAPI dependencies `Reader` and `Admin` give a route the
holder (401 without a valid token, 403 for a read-only token where admin is needed).
"""

import asyncio
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from host_agent.store.records import Device, Token

__all__ = ["Admin", "Principal", "Reader", "admin", "bearer", "limit_to_metrics", "principal"]

bearer = HTTPBearer(auto_error=False)


class Principal(BaseModel):
    name: str
    scope: str
    devices: list[str] | None = None
    metrics: list[str] | None = None
    account: str | None = None

    @classmethod
    def of(cls, token: Token) -> "Principal":
        """The holder of a live token."""
        return cls(
            name=token.name,
            scope=token.scope,
            devices=token.devices,
            metrics=token.metrics,
            account=token.account,
        )

    def can_see(self, device: Device) -> bool:
        """True when this token may know of the device (a pending one: admin tokens only)."""
        if device.state == "pending" and self.scope != "admin":
            return False
        return self.may_know(device.device_id, device.owner_id)

    def may_know(self, device_id: str, owner_id: str | None) -> bool:
        """True when this token's limits (devices, account) take in a device of this id and owner."""
        if self.account is not None and owner_id != self.account:
            return False
        return self.devices is None or device_id in self.devices


def limit_to_metrics(item: dict[str, Any], metrics: list[str] | None) -> dict[str, Any] | None:
    """Return a reading as a token limited to `metrics` may see it, or None if it carries none of them.

    A signed message cannot be cut without breaking its signature, and it holds every value: a
    reading that carries other metrics too comes with the allowed values only, without
    `message_hex`, and `is_partial` true.
    """
    if metrics is None:
        return dict(item, is_partial=False)
    values = [v for v in item["values"] if v["n"] in metrics]
    if not values:
        return None
    if len(values) == len(item["values"]):
        return dict(item, is_partial=False)
    cut = {key: value for key, value in item.items() if key != "message_hex"}
    return dict(cut, values=values, is_partial=True)


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The token's holder, or 401."""
    if credentials is None:
        raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
    token = await asyncio.to_thread(request.app.state.store.token, credentials.credentials)
    if token is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return Principal.of(token)


Reader = Annotated[Principal, Depends(principal)]


async def admin(who: Reader) -> Principal:
    """The token's holder if the token has the admin scope, or 403."""
    if who.scope != "admin":
        raise HTTPException(403, "this token is read-only: use an admin token")
    return who


Admin = Annotated[Principal, Depends(admin)]
