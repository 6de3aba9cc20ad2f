"""The open HTTP API (FastAPI): devices, cards, readings, live stream, routes, commands, audit.

Every endpoint but /healthz needs a bearer token (`firstparty tokens create`). Scopes:
- `read`: GET endpoints, limited to the token's devices and metrics when it names them;
- `admin`: everything, including routes, commands, accept/reject.
In the vendor role a token belongs to an account (an owner id) and sees only the devices whose
card names that owner (the owner whose key signed the claim). The OpenAPI document is at
/openapi.json, the interactive one at /docs.
"""

import asyncio
import json
from typing import Annotated, Any

import prometheus_client
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from host_agent.errors import UserError

bearer = HTTPBearer(auto_error=False)


class Principal(BaseModel):
    name: str
    scope: str
    devices: list[str] | None = None
    metrics: list[str] | None = None
    account: str | None = None

    def can_see(self, device: dict[str, Any]) -> bool:
        if self.account is not None and device.get("owner_id") != self.account:
            return False
        return self.devices is None or device["device_id"] in self.devices


class RouteSpec(BaseModel):
    """A route's destination, scope, mode and terms (PUT /routes/{name} takes the name from the path)."""

    destination: dict[str, Any]
    devices: list[str] = ["*"]
    metrics: list[str] = ["*"]
    mode: str = "in-addition-to"
    terms: dict[str, Any] = {}


class RouteIn(RouteSpec):
    name: str = Field(min_length=1, max_length=64)


class CardIn(BaseModel):
    card_hex: str = Field(pattern="^([0-9a-f]{2})+$", max_length=4096)


class CommandIn(BaseModel):
    op: str
    args: dict[str, Any] = {}
    timeout_s: float | None = Field(default=None, gt=0, le=120)


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
    return Principal(**token)


Reader = Annotated[Principal, Depends(principal)]


async def admin(who: Reader) -> Principal:
    """The token's holder if the token has the admin scope, or 403."""
    if who.scope != "admin":
        raise HTTPException(403, "this token is read-only: use an admin token")
    return who


Admin = Annotated[Principal, Depends(admin)]


def build_app(agent) -> FastAPI:
    """Return the FastAPI application serving this agent."""
    store = agent.store
    app = FastAPI(
        title="Firstparty host agent",
        version="1",
        description="The owner's copy of every signed reading, and control of the devices.",
    )
    app.state.store = store
    registry = prometheus_client.CollectorRegistry()
    accepted = prometheus_client.Gauge(
        "firstparty_accepted_total", "Messages accepted", ["kind"], registry=registry
    )
    rejected = prometheus_client.Gauge(
        "firstparty_rejected_total", "Messages rejected", ["reason"], registry=registry
    )
    outbox_pending = prometheus_client.Gauge(
        "firstparty_outbox_pending", "Forwards waiting for delivery", registry=registry
    )
    delivered = prometheus_client.Gauge(
        "firstparty_outbox_delivered_total", "Forwards delivered since start", registry=registry
    )

    @app.exception_handler(UserError)
    async def _user_error(request: Request, error: UserError):
        return JSONResponse({"detail": str(error)}, status_code=400)

    async def visible_devices(who: Principal) -> list[dict[str, Any]]:
        return [d for d in await asyncio.to_thread(store.devices) if who.can_see(d)]

    async def one_device(device_id: str, who: Principal) -> dict[str, Any]:
        device = await asyncio.to_thread(store.device, device_id)
        if device is None or not who.can_see(device):
            raise HTTPException(404, f"no device {device_id} for this token")
        return device

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        status = agent.status()
        ok = status["store"] == "ok" and status["broker"] == "connected"
        return {"ok": ok, "store": status["store"], "broker": status["broker"], "role": status["role"]}

    @app.get("/metrics")
    async def metrics(who: Reader) -> Response:
        status = agent.status()
        for kind, count in status["accepted"].items():
            accepted.labels(kind).set(count)
        for reason, count in agent.ingest.rejected_counts.items():
            rejected.labels(reason).set(count)
        outbox_pending.set(await asyncio.to_thread(store.outbox_pending))
        delivered.set(status["outbox_delivered"])
        return Response(
            prometheus_client.generate_latest(registry), media_type=prometheus_client.CONTENT_TYPE_LATEST
        )

    @app.get("/status")
    async def status(who: Reader) -> dict[str, Any]:
        return agent.status()

    @app.get("/devices")
    async def devices(who: Reader) -> list[dict[str, Any]]:
        return [d for d in await visible_devices(who) if d["state"] != "pending" or who.scope == "admin"]

    @app.post("/devices", status_code=201)
    async def register(body: CardIn, who: Admin) -> dict[str, Any]:
        """Register a device claimed for this owner at flash time (`firstparty flash` does it)."""
        return await agent.register_card(bytes.fromhex(body.card_hex))

    @app.get("/devices/{device_id}")
    async def device(device_id: str, who: Reader) -> dict[str, Any]:
        return await one_device(device_id, who)

    @app.get("/devices/{device_id}/card", responses={200: {"content": {"application/cose": {}}}})
    async def card(device_id: str, who: Reader) -> Response:
        await one_device(device_id, who)
        data = await asyncio.to_thread(store.card, device_id)
        return Response(data, media_type='application/cose; cose-type="cose-sign1"')

    @app.post("/devices/{device_id}/commands")
    async def command(device_id: str, body: CommandIn, who: Admin) -> dict[str, Any]:
        await one_device(device_id, who)
        result = await agent.command(device_id, body.op, body.args, body.timeout_s)
        return result.as_dict()

    @app.get("/pending")
    async def pending(who: Admin) -> list[dict[str, Any]]:
        return [d for d in await visible_devices(who) if d["state"] == "pending"]

    @app.post("/pending/{device_id}/accept")
    async def accept(device_id: str, who: Admin) -> dict[str, Any]:
        await agent.set_device_state(device_id, "accepted")
        return {"device_id": device_id, "state": "accepted"}

    @app.post("/pending/{device_id}/reject")
    async def reject(device_id: str, who: Admin) -> dict[str, Any]:
        await agent.set_device_state(device_id, "rejected")
        return {"device_id": device_id, "state": "rejected"}

    @app.get("/readings")
    async def readings(
        who: Reader,
        device: Annotated[list[str] | None, Query()] = None,
        metric: str | None = None,
        since_s: float | None = None,
        until_s: float | None = None,
        after_id: int = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        allowed = [d["device_id"] for d in await visible_devices(who) if d["state"] == "accepted"]
        wanted = [d for d in device if d in allowed] if device else allowed
        if who.metrics is not None and metric is not None and metric not in who.metrics:
            raise HTTPException(403, f"this token may not read {metric}")
        items = await asyncio.to_thread(
            store.readings, wanted, metric, since_s, until_s, after_id, limit, who.metrics
        )
        next_after = items[-1]["id"] if len(items) == limit else None
        return {"items": items, "next_after_id": next_after}

    @app.get("/stream", responses={200: {"content": {"text/event-stream": {}}}})
    async def stream(request: Request, who: Reader) -> StreamingResponse:
        allowed = {d["device_id"] for d in await visible_devices(who) if d["state"] == "accepted"}
        queue: asyncio.Queue = asyncio.Queue()
        agent.live.add(queue)

        async def events():
            try:
                yield ": firstparty live readings\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if event["device_id"] not in allowed:
                        continue
                    if who.metrics is not None:
                        if not all(v["n"] in who.metrics for v in event["values"]):
                            continue
                    yield f"id: {event['id']}\nevent: reading\ndata: {json.dumps(event)}\n\n"
            finally:
                agent.live.discard(queue)

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/routes")
    async def routes(who: Admin) -> list[dict[str, Any]]:
        return await asyncio.to_thread(store.routes, True)

    @app.post("/routes", status_code=201)
    async def add_route(body: RouteIn, who: Admin) -> dict[str, Any]:
        spec = body.model_dump()
        name = spec.pop("name")
        return await agent.add_route(name, spec)

    @app.put("/routes/{name}")
    async def change_route(name: str, body: RouteSpec, who: Admin) -> dict[str, Any]:
        spec = body.model_dump()
        await agent.remove_route(name)
        return await agent.add_route(name, spec)

    @app.delete("/routes/{name}")
    async def remove_route(name: str, who: Admin) -> dict[str, Any]:
        return await agent.remove_route(name)

    @app.get("/grants")
    async def grant_list(who: Admin) -> list[dict[str, Any]]:
        return [
            {
                "route": r["name"],
                "terms": r.get("terms", {}),
                "grant_hex": r["grant_hex"],
                "is_active": r["is_active"],
            }
            for r in await asyncio.to_thread(store.routes, True)
        ]

    @app.get("/owner")
    async def owner(who: Reader) -> dict[str, Any]:
        return {"owner_id": agent.owner.owner_id, "public_key_hex": agent.owner.public.hex()}

    @app.get("/rejections")
    async def rejections(who: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        return {
            "counts": {k: v for k, v in agent.ingest.rejected_counts.items() if v},
            "recent": await asyncio.to_thread(store.rejections, limit),
        }

    @app.get("/audit")
    async def audit_entries(
        who: Admin, after_seq: int = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        bad = await asyncio.to_thread(store.audit_verify)
        return {
            "is_intact": bad is None,
            "first_bad": bad,
            "entries": await asyncio.to_thread(store.audit_entries, after_seq, limit),
        }

    return app
