"""Device control: sign an owner command, send it, and await the device's signed acknowledgement.

The ack binds SHA-256 of the exact command bytes, so the answer is matched by that digest, never
by arrival order. Ingest verifies the ack (signature, replay rule) before `resolve` sees it.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from fp import topics
from host_agent.owner import Owner

OPS = ("set-destinations", "set-interval", "get-info", "reboot", "hand-over", "claim")


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


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class Commander:
    """Sends commands through a publish function and matches acks by command digest."""

    def __init__(self, owner: Owner, publish, audit, timeout_s: float = 10.0):
        self.owner = owner
        self.publish = publish  # (topic, payload) -> None, non-blocking
        self.audit = audit  # async (kind, data) -> None
        self.timeout_s = timeout_s
        self.waiting: dict[bytes, asyncio.Future] = {}

    async def send(
        self, device_id: str, op: str, args: dict, timeout_s: float | None = None
    ) -> CommandResult:
        if op == "claim":
            args = {"owner": self.owner.public}
        data = await asyncio.to_thread(self.owner.command, device_id, op, args)
        digest = hashlib.sha256(data).digest()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiting[digest] = future
        await self.audit(
            "command", {"device": device_id, "op": op, "args": _plain(args), "digest": digest.hex()}
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

    def resolve(self, body: dict) -> None:
        """Hand a verified ack body to the command waiting for it (if any)."""
        future = self.waiting.get(body.get("cmd", b""))
        if future is not None and not future.done():
            future.set_result(body)
