"""The HTTP routes of updates (docs/agent-api.md, "Updates"): releases on offer, approvals, transfers."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from host_agent.api import Admin, Principal, Reader
from host_agent.errors import UserError

_HEX = "^([0-9a-f]{2})+$"
_TAG = "^[0-9a-f]{16}$"


class UpdateIn(BaseModel):
    release: str = Field(pattern=_TAG, description="a release's tag, from GET /releases")


class ApprovalIn(BaseModel):
    approval_hex: str = Field(
        pattern=_HEX, max_length=1024, description="an owner's approval (content type 65211)"
    )


def add_routes(app: FastAPI, agent) -> None:
    # looked up per request: the offline app of the OpenAPI document has no agent behind it

    async def one_device(device_id: str, who: Principal) -> dict[str, Any]:
        device = await asyncio.to_thread(agent.store.device, device_id)
        if device is None or not who.can_see(device):
            raise HTTPException(404, f"no device {device_id} for this token")
        return device

    def release_or_404(call, *args):
        try:
            return call(*args)
        except LookupError as error:
            raise HTTPException(404, str(error)) from None
        except UserError as error:
            raise HTTPException(400, str(error)) from None

    @app.get("/releases")
    async def releases(who: Reader) -> list[dict[str, Any]]:
        """The releases this agent offers (the vendor's, to its devices and their owners)."""
        return await asyncio.to_thread(agent.updates.releases)

    @app.post("/releases/{tag}/approve")
    async def approve(tag: str, who: Admin) -> dict[str, Any]:
        """The agent's owner approves the release: the approval that goes with its transfers."""
        if who.account is not None:
            raise HTTPException(403, "an account's token approves with its own agent (POST .../approvals)")
        approval = await asyncio.to_thread(release_or_404, agent.updates.approve, tag)
        await agent.audit("approve", {"release": tag})
        return {"release": tag, "owner_id": agent.owner.owner_id, "approval_hex": approval.hex()}

    @app.post("/releases/{tag}/approvals")
    async def add_approval(tag: str, body: ApprovalIn, who: Admin) -> dict[str, Any]:
        """Keep an owner's approval of the release, made by that owner's agent (POST .../approve)."""
        approval = bytes.fromhex(body.approval_hex)
        owner_id = await asyncio.to_thread(release_or_404, agent.updates.approval_owner, tag, approval)
        if who.account is not None and owner_id != who.account:
            raise HTTPException(403, f"this token is {who.account}'s: it may not approve for {owner_id}")
        await asyncio.to_thread(release_or_404, agent.updates.add_approval, tag, approval)
        await agent.audit("approval", {"release": tag, "owner": owner_id})
        return {"release": tag, "owner_id": owner_id}

    @app.post("/devices/{device_id}/update", status_code=202)
    async def start_update(device_id: str, body: UpdateIn, who: Admin) -> dict[str, Any]:
        """Send a release to the device (resumes where the device's flash left off)."""
        device = await one_device(device_id, who)
        try:
            await agent.updates.start(device, body.release)
        except LookupError as error:
            raise HTTPException(404, str(error)) from None
        except UserError as error:
            raise HTTPException(409, str(error)) from None
        return agent.updates.progress(device)

    @app.get("/devices/{device_id}/update")
    async def update_progress(device_id: str, who: Reader) -> dict[str, Any]:
        """The device's update state and the transfer to it."""
        return agent.updates.progress(await one_device(device_id, who))
