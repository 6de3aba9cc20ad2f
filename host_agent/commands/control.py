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

# pydantic (FastAPI's answers) reads typing_extensions' TypedDict, not typing's, before Python 3.12
from typing_extensions import TypedDict

from fp import topics
from fp.messages import OPS as OPS  # the operations a device interprets, for the CLI and the API
from host_agent.errors import UserError
from host_agent.owner import Owner

KEY_HEX = re.compile(r"[0-9a-fA-F]{64}")


class CommandReport(TypedDict):
    """A command's result as JSON: the API's answer (POST /devices/{id}/commands) and the audit's entry."""

    device_id: str
    op: str
    outcome: str  # "applied", a refusal reason from the device, or "timeout"
    detail: str
    result: Any  # the op's answer as the device gave it (decoded CBOR), bytes as hex


@dataclass(frozen=True, slots=True)
class Ack:
    """A device's signed acknowledgement of a command, as the command waits for it."""

    outcome: str
    detail: str
    result: Any  # the op's answer (decoded CBOR)


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

    def as_dict(self) -> CommandReport:
        return CommandReport(
            device_id=self.device_id,
            op=self.op,
            outcome=self.outcome,
            detail=self.detail,
            result=_plain(self.result),
        )


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
        self.waiting: dict[bytes, asyncio.Future[Ack]] = {}

    async def send(
        self, device_id: str, op: str, args: dict[str, Any], timeout_s: float | None = None
    ) -> CommandResult:
        if op == "claim":
            args = {"owner": self.owner.public}
        else:
            args = device_args(op, args)
        data = await asyncio.to_thread(self.owner.command, device_id, op, args)
        digest = hashlib.sha256(data).digest()
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self.waiting[digest] = future
        await self.audit(
            "command",
            {"device": device_id, "op": op, "args": _plain(_without_secrets(args)), "digest": digest.hex()},
        )
        try:
            self.publish(topics.topic(device_id, "command"), data)
            ack = await asyncio.wait_for(future, timeout_s or self.timeout_s)
            result = CommandResult(device_id, op, ack.outcome, ack.detail, ack.result)
        except TimeoutError:
            result = CommandResult(
                device_id, op, "timeout", f"no signed ack within {timeout_s or self.timeout_s:g} s", None
            )
        finally:
            self.waiting.pop(digest, None)
        await self.audit("ack", dict(result.as_dict(), digest=digest.hex()))
        return result

    def resolve(self, body: dict[str, Any]) -> None:
        """Hand a verified ack body to the command waiting for it (if any).

        `body` is decoded CBOR whose shape fp.messages checked: `cmd` 32 bytes, `outcome` and `detail` text."""
        future = self.waiting.get(body.get("cmd", b""))
        if future is not None and not future.done():
            future.set_result(Ack(body["outcome"], body.get("detail", ""), body.get("result")))
