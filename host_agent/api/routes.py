"""Routes: where a device's readings go, on which terms; and the grants the owner signed for them."""

from typing import Any

from fastapi import APIRouter

from host_agent.api.agent import AgentDep
from host_agent.api.auth import Admin
from host_agent.api.models import GrantOut, RouteIn, RouteOut, RouteSpec
from host_agent.api.scope import check_route_devices, route_of, visible_routes

__all__ = ["router"]

router = APIRouter()


@router.get("/routes")
async def routes(who: Admin, agent: AgentDep) -> list[RouteOut]:
    """The routes (removed ones too) of this token's devices; a password shows as `has_password`."""
    return [RouteOut.of(route) for route in await visible_routes(agent.store, who)]


@router.post("/routes", status_code=201)
async def add_route(body: RouteIn, who: Admin, agent: AgentDep) -> dict[str, Any]:
    await check_route_devices(agent.store, who, body.devices)
    return (await agent.add_route(body.name, body.spec())).as_dict()


@router.put("/routes/{name}")
async def change_route(name: str, body: RouteSpec, who: Admin, agent: AgentDep) -> dict[str, Any]:
    """Replace a route in one step; a body that does not validate leaves it as it was."""
    await route_of(agent.store, name, who)
    await check_route_devices(agent.store, who, body.devices)
    return (await agent.change_route(name, body.spec())).as_dict()


@router.delete("/routes/{name}")
async def remove_route(name: str, who: Admin, agent: AgentDep) -> dict[str, Any]:
    await route_of(agent.store, name, who)
    return (await agent.remove_route(name)).as_dict()


@router.get("/grants")
async def grant_list(who: Admin, agent: AgentDep) -> list[GrantOut]:
    return [
        GrantOut(route=r.name, terms=r.terms, grant_hex=r.grant_hex, is_active=r.is_active)
        for r in await visible_routes(agent.store, who)
    ]
