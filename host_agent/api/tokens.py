"""API bearer tokens: random secrets shown once, stored only as SHA-256 hashes, with scopes."""

from __future__ import annotations

import secrets

from fp.ids import is_valid_id
from host_agent.errors import UserError
from host_agent.store.base import Store

SCOPES = ("read", "admin")


def issue(
    store: Store,
    name: str,
    scope: str,
    devices: list[str] | None = None,
    metrics: list[str] | None = None,
    account: str | None = None,
) -> str:
    """Create a token and return it (the only time it exists in clear)."""
    if scope not in SCOPES:
        raise UserError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    for device_id in devices or ():
        if not is_valid_id(device_id):
            raise UserError(f"{device_id!r} is not a device id (24 base32 characters)")
    if account is not None and not is_valid_id(account):
        raise UserError(f"account {account!r} is not an owner id")
    if any(t.name == name and t.is_live for t in store.tokens()):
        raise UserError(f"a token named {name!r} exists: revoke it first or pick another name")
    token = "fpt_" + secrets.token_urlsafe(32)
    store.add_token(token, name, scope, devices, metrics, account)
    return token


def revoke(store: Store, name: str) -> None:
    if not store.revoke_token(name):
        raise UserError(f"no live token named {name!r}: see `firstparty tokens list`")
