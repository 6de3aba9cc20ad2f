"""Updates (docs/agent-api.md, "Updates"): releases on offer, owners' approvals, transfers to devices."""

import asyncio
from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, HTTPException

from host_agent.api.agent import AgentDep
from host_agent.api.auth import Admin, Reader
from host_agent.api.models import ApprovalIn, ApprovalKeptOut, OwnApprovalOut, UpdateIn
from host_agent.api.scope import one_device
from host_agent.errors import UserError
from host_agent.updates.desk import Progress, ReleaseInfo

__all__ = ["router"]

router = APIRouter()
T = TypeVar("T")


def _release_or_404(call: Callable[..., T], *args: object) -> T:
    try:
        return call(*args)
    except LookupError as error:
        raise HTTPException(404, str(error)) from None
    except UserError as error:
        raise HTTPException(400, str(error)) from None


@router.get("/releases")
async def releases(who: Reader, agent: AgentDep) -> list[ReleaseInfo]:
    """The releases this agent offers (the vendor's, to its devices and their owners)."""
    return await asyncio.to_thread(agent.updates.releases)


@router.post("/releases/{tag}/approve")
async def approve(tag: str, who: Admin, agent: AgentDep) -> OwnApprovalOut:
    """The agent's owner approves the release: the approval that goes with its transfers."""
    if who.account is not None:
        raise HTTPException(403, "an account's token approves with its own agent (POST .../approvals)")
    approval = await asyncio.to_thread(_release_or_404, agent.updates.approve, tag)
    await agent.audit("approve", {"release": tag})
    return OwnApprovalOut(release=tag, owner_id=agent.owner.owner_id, approval_hex=approval.hex())


@router.post("/releases/{tag}/approvals")
async def add_approval(tag: str, body: ApprovalIn, who: Admin, agent: AgentDep) -> ApprovalKeptOut:
    """Keep an owner's approval of the release, made by that owner's agent (POST .../approve)."""
    approval = bytes.fromhex(body.approval_hex)
    owner_id = await asyncio.to_thread(_release_or_404, agent.updates.approval_owner, tag, approval)
    if who.account is not None and owner_id != who.account:
        raise HTTPException(403, f"this token is {who.account}'s: it may not approve for {owner_id}")
    await asyncio.to_thread(_release_or_404, agent.updates.add_approval, tag, approval)
    await agent.audit("approval", {"release": tag, "owner": owner_id})
    return ApprovalKeptOut(release=tag, owner_id=owner_id)


@router.post("/devices/{device_id}/update", status_code=202)
async def start_update(device_id: str, body: UpdateIn, who: Admin, agent: AgentDep) -> Progress:
    """Send a release to the device (resumes where the device's flash left off)."""
    device = await one_device(agent.store, device_id, who)
    try:
        await agent.updates.start(device, body.release)
    except LookupError as error:
        raise HTTPException(404, str(error)) from None
    except UserError as error:
        raise HTTPException(409, str(error)) from None
    return agent.updates.progress(device)


@router.get("/devices/{device_id}/update")
async def update_progress(device_id: str, who: Reader, agent: AgentDep) -> Progress:
    """The device's update state and the transfer to it."""
    return agent.updates.progress(await one_device(agent.store, device_id, who))
