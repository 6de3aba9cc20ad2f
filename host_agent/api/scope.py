"""What a token may see and change, looked up in the store: devices, routes (404 or 403 otherwise)."""

import asyncio

from fastapi import HTTPException

from host_agent.api.auth import Principal
from host_agent.api.models import DeviceOut
from host_agent.errors import UserError
from host_agent.routes.rules import Route
from host_agent.store.base import Store
from host_agent.store.records import Device
from host_agent.updates.sender import summary

__all__ = ["check_route_devices", "device_out", "one_device", "route_of", "visible_devices", "visible_routes"]


async def route_devices_allowed(store: Store, who: Principal, devices: list[str]) -> bool:
    """True when this token may see, make or change a route of these devices."""
    if who.devices is None and who.account is None:
        return True
    if "*" in devices:
        return False
    for device_id in devices:
        device = await asyncio.to_thread(store.device, device_id)
        if not (who.can_see(device) if device else who.may_know(device_id, None)):
            return False
    return True


async def check_route_devices(store: Store, who: Principal, devices: list[str]) -> None:
    if not await route_devices_allowed(store, who, devices):
        raise HTTPException(
            403, "this token is limited to its devices: a route may name only those, one by one"
        )


async def route_of(store: Store, name: str, who: Principal) -> Route:
    for route in await asyncio.to_thread(store.routes):
        if route.name == name and await route_devices_allowed(store, who, route.devices):
            return route
    raise UserError(f"no route {name!r}: see `firstparty routes list`")


async def visible_routes(store: Store, who: Principal) -> list[Route]:
    return [
        route
        for route in await asyncio.to_thread(store.routes, True)
        if await route_devices_allowed(store, who, route.devices)
    ]


def device_out(device: Device) -> DeviceOut:
    """The device as the API shows it, with its update state in one word (fp.ota's, from its last
    signed status)."""
    return DeviceOut.of(device, summary((device.status or {}).get("update")))


async def visible_devices(store: Store, who: Principal) -> list[Device]:
    return [d for d in await asyncio.to_thread(store.devices) if who.can_see(d)]


async def one_device(store: Store, device_id: str, who: Principal) -> Device:
    device = await asyncio.to_thread(store.device, device_id)
    if device is None or not who.can_see(device):
        raise HTTPException(404, f"no device {device_id} for this token")
    return device
