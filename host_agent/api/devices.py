"""Devices: list and show, register and enrol, accept or reject, their cards, commands, relays, the owner."""

import asyncio

from fastapi import APIRouter, HTTPException, Response

from fp.errors import ProtocolError
from host_agent import wire
from host_agent.api.agent import AgentDep
from host_agent.api.auth import Admin, Reader
from host_agent.api.models import (
    CardIn,
    CommandIn,
    DeviceOut,
    EnrolIn,
    EnrolledOut,
    OwnerOut,
    RegisteredOut,
    RelayIn,
    RelayOut,
    RelayRemovedOut,
    StateChangeOut,
)
from host_agent.api.scope import device_out, one_device, visible_devices
from host_agent.commands.control import CommandReport

__all__ = ["router"]

router = APIRouter()


@router.get("/devices")
async def devices(who: Reader, agent: AgentDep) -> list[DeviceOut]:
    return [device_out(d) for d in await visible_devices(agent.store, who)]


@router.post("/devices", status_code=201)
async def register(body: CardIn, who: Admin, agent: AgentDep) -> RegisteredOut:
    """Register a device claimed for this owner at flash time (`firstparty flash` does it)."""
    data = bytes.fromhex(body.card_hex)
    try:
        card = wire.parse_card(data)
    except ProtocolError:
        card = None  # register_card refuses it and says why
    if card is not None and not who.may_know(card.device_id, card.owner_id):
        raise HTTPException(403, f"this token may not register {card.device_id}: not one of its devices")
    return await agent.register_card(data)


@router.post("/devices/enrol", status_code=201)
async def enrol(body: EnrolIn, who: Admin, agent: AgentDep) -> EnrolledOut:
    """Let a device connect to the embedded broker: its card and password, or its LAN address."""
    if body.device_url is not None and body.card_hex is None and body.password is None:
        return await agent.enrol_from_device(body.device_url)
    if body.device_url is None and body.card_hex is not None and body.password is not None:
        return await agent.enrol(bytes.fromhex(body.card_hex), body.password)
    raise HTTPException(422, "give card_hex and password, or device_url alone")


@router.post("/relays", status_code=201)
async def add_relay(body: RelayIn, who: Admin, agent: AgentDep) -> RelayOut:
    """A relay account on the devices' listener; its password is shown this once."""
    return await agent.add_relay(body.name, body.owner_id)


@router.delete("/relays/{name}")
async def remove_relay(name: str, who: Admin, agent: AgentDep) -> RelayRemovedOut:
    return await agent.remove_relay(name)


@router.get("/devices/{device_id}")
async def device(device_id: str, who: Reader, agent: AgentDep) -> DeviceOut:
    return device_out(await one_device(agent.store, device_id, who))


@router.get("/devices/{device_id}/card", responses={200: {"content": {"application/cose": {}}}})
async def card(device_id: str, who: Reader, agent: AgentDep) -> Response:
    await one_device(agent.store, device_id, who)
    data = await asyncio.to_thread(agent.store.card, device_id)
    return Response(data, media_type='application/cose; cose-type="cose-sign1"')


@router.post("/devices/{device_id}/commands")
async def command(device_id: str, body: CommandIn, who: Admin, agent: AgentDep) -> CommandReport:
    await one_device(agent.store, device_id, who)
    result = await agent.command(device_id, body.op, body.args, body.timeout_s)
    return result.as_dict()


@router.get("/pending")
async def pending(who: Admin, agent: AgentDep) -> list[DeviceOut]:
    return [device_out(d) for d in await visible_devices(agent.store, who) if d.state == "pending"]


@router.post("/pending/{device_id}/accept")
async def accept(device_id: str, who: Admin, agent: AgentDep) -> StateChangeOut:
    await one_device(agent.store, device_id, who)
    await agent.set_device_state(device_id, "accepted")
    return StateChangeOut(device_id=device_id, state="accepted")


@router.post("/pending/{device_id}/reject")
async def reject(device_id: str, who: Admin, agent: AgentDep) -> StateChangeOut:
    await one_device(agent.store, device_id, who)
    await agent.set_device_state(device_id, "rejected")
    return StateChangeOut(device_id=device_id, state="rejected")


@router.get("/owner")
async def owner(who: Reader, agent: AgentDep) -> OwnerOut:
    receipts = agent.receipts
    return OwnerOut(
        owner_id=agent.owner.owner_id,
        public_key_hex=agent.owner.public.hex(),
        receipt_key_hex=receipts.public.hex() if receipts else None,
    )
