"""Device control: sign an owner command, send it, and await the device's signed acknowledgement.

The ack binds SHA-256 of the exact command bytes, so the answer is matched by that digest, never
by arrival order. Ingest verifies the ack (signature, replay rule) before `resolve` sees it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from fp import topics
from fp.command import OPS as OPS  # the device's own list of operations, for the CLI and the API
from host_agent.errors import UserError
from host_agent.owner import Owner

KEY_HEX = re.compile(r"[0-9a-fA-F]{64}")


@dataclass
class CommandResult:
    device_id: str
    op: str
    outcome: str  # "applied", a refusal reason from the device, or "timeout"
    detail: str
    result: Any

    @property
    def is_applied(self) -> bool:
        return self.outcome == "applied"

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "op": self.op,
            "outcome": self.outcome,
            "detail": self.detail,
            "result": _plain(self.result),
        }


def device_args(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Return a command's arguments as the device takes them, from their JSON form; raise UserError.

    JSON (the API's body, the CLI's argument) has no bytes, and hand-over wants the new owner's
    32-byte public key as CBOR bytes: it is given as `{"owner_hex": 64 hex digits}`.
    """
    if op != "hand-over":
        return args
    key = args.get("owner_hex")
    if set(args) != {"owner_hex"} or not isinstance(key, str) or not KEY_HEX.fullmatch(key):
        found = repr(args)
        raise UserError(
            'hand-over takes {"owner_hex": the new owner\'s 32-byte public key as 64 hex digits}'
            " (public_key_hex of the new owner's GET /owner), found "
            + (found if len(found) <= 120 else found[:117] + "...")
        )
    return {"owner": bytes.fromhex(key)}


def _without_secrets(value: Any) -> Any:
    """A command's arguments as the audit keeps them: a broker password becomes `has_password`."""
    if isinstance(value, dict):
        table = cast("dict[str, Any]", value)
        shown = {k: _without_secrets(v) for k, v in table.items() if k != "password"}
        if table.get("password") is not None:
            shown["has_password"] = True
        return shown
    if isinstance(value, list):
        return [_without_secrets(v) for v in cast("list[Any]", value)]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in cast("dict[Any, Any]", value).items()}
    if isinstance(value, list):
        return [_plain(v) for v in cast("list[Any]", value)]
    return value


class Commander:
    """Sends commands through a publish function and matches acks by command digest."""

    def __init__(
        self,
        owner: Owner,
        publish: Callable[[str, bytes], None],
        audit: Callable[[str, dict[str, Any]], Awaitable[None]],
        timeout_s: float = 10.0,
    ):
        self.owner = owner
        self.publish = publish  # (topic, payload) -> None, non-blocking
        self.audit = audit  # async (kind, data) -> None
        self.timeout_s = timeout_s
        self.waiting: dict[bytes, asyncio.Future[dict[str, Any]]] = {}

    async def send(
        self, device_id: str, op: str, args: dict[str, Any], timeout_s: float | None = None
    ) -> CommandResult:
        if op == "claim":
            args = {"owner": self.owner.public}
        else:
            args = device_args(op, args)
        data = await asyncio.to_thread(self.owner.command, device_id, op, args)
        digest = hashlib.sha256(data).digest()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[digest] = future
        await self.audit(
            "command",
            {"device": device_id, "op": op, "args": _plain(_without_secrets(args)), "digest": digest.hex()},
        )
        try:
            self.publish(topics.topic(device_id, "command"), data)
            body = await asyncio.wait_for(future, timeout_s or self.timeout_s)
            result = CommandResult(device_id, op, body["outcome"], body.get("detail", ""), body.get("result"))
        except TimeoutError:
            result = CommandResult(
                device_id, op, "timeout", f"no signed ack within {timeout_s or self.timeout_s:g} s", None
            )
        finally:
            self.waiting.pop(digest, None)
        await self.audit("ack", dict(result.as_dict(), digest=digest.hex()))
        return result

    def resolve(self, body: dict[str, Any]) -> None:
        """Hand a verified ack body to the command waiting for it (if any)."""
        future = self.waiting.get(body.get("cmd", b""))
        if future is not None and not future.done():
            future.set_result(body)
