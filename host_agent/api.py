"""The open HTTP API (FastAPI): devices, cards, readings, live stream, routes, commands, audit.

Every endpoint needs a bearer token (`firstparty tokens create`) but these: /healthz; the
description of the API, which holds no data: the OpenAPI document at /openapi.json and its pages
/docs (Swagger UI) and /redoc; and first-party terms as a second party answers any owner
(host_agent/terms/api.py): its policy at /.well-known/firstparty-terms, /terms/roster, and the
inboxes /terms/proffers and /terms/terminations, which take only signed messages. Scopes:
- `read`: GET endpoints, limited to the token's devices and metrics when it names them; pending
  devices do not exist for it;
- `admin`: everything, including routes, commands, accept/reject; a token limited to devices
  registers, accepts, rejects and commands only those.
A metric-limited token gets a reading's signed message only when every value in it is one of
its metrics; the others come cut to its metrics, without the message (`is_partial`).
In the vendor role a token belongs to an account (an owner id) and sees only the devices whose
card names that owner (the owner whose key signed the claim).
"""

import asyncio
import json
from typing import Annotated, Any

import prometheus_client
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from fp.errors import ProtocolError
from host_agent import wire
from host_agent.errors import UserError

bearer = HTTPBearer(auto_error=False)


class Principal(BaseModel):
    name: str
    scope: str
    devices: list[str] | None = None
    metrics: list[str] | None = None
    account: str | None = None

    def can_see(self, device: dict[str, Any]) -> bool:
        """True when this token may know of the device (a pending one: admin tokens only)."""
        if self.account is not None and device.get("owner_id") != self.account:
            return False
        if device.get("state") == "pending" and self.scope != "admin":
            return False
        return self.devices is None or device["device_id"] in self.devices


def limit_to_metrics(item: dict[str, Any], metrics: list[str] | None) -> dict[str, Any] | None:
    """Return a reading as a token limited to `metrics` may see it, or None if it carries none of them.

    A signed message cannot be cut without breaking its signature, and it holds every value: a
    reading that carries other metrics too comes with the allowed values only, without
    `message_hex`, and `is_partial` true.
    """
    if metrics is None:
        return dict(item, is_partial=False)
    values = [v for v in item["values"] if v["n"] in metrics]
    if not values:
        return None
    if len(values) == len(item["values"]):
        return dict(item, is_partial=False)
    cut = {key: value for key, value in item.items() if key != "message_hex"}
    return dict(cut, values=values, is_partial=True)


class RouteSpec(BaseModel):
    """A route's destination, scope, mode and terms (PUT /routes/{name} takes the name from the path)."""

    destination: dict[str, Any]
    devices: list[str] = ["*"]
    metrics: list[str] = ["*"]
    mode: str = "in-addition-to"
    terms: dict[str, Any] = {}
    needs_agreement: bool = False  # deliver only what an agreement both parties signed carries


class RouteIn(RouteSpec):
    name: str = Field(min_length=1, max_length=64)


class CardIn(BaseModel):
    card_hex: str = Field(pattern="^([0-9a-f]{2})+$", max_length=4096)


class CommandIn(BaseModel):
    """A command; hand-over takes the new owner's key as `{"owner_hex": 64 hex digits}`."""

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
        swagger_ui_oauth2_redirect_url=None,  # bearer tokens only: no OAuth2 page to leave open
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

    @app.get(
        "/healthz",
        responses={
            503: {"description": "Not ok: the store cannot commit or the broker is disconnected (same body)"}
        },
    )
    async def healthz(response: Response) -> dict[str, Any]:
        """200 when the store commits and the broker is connected, else 503; the body says which."""
        status = agent.status()
        ok = status["store"] == "ok" and status["broker"] == "connected"
        if not ok:
            response.status_code = 503
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
        return await visible_devices(who)

    @app.post("/devices", status_code=201)
    async def register(body: CardIn, who: Admin) -> dict[str, Any]:
        """Register a device claimed for this owner at flash time (`firstparty flash` does it)."""
        data = bytes.fromhex(body.card_hex)
        try:
            card = wire.parse_card(data)
        except ProtocolError:
            card = None  # register_card refuses it and says why
        if card is not None and not who.can_see({"device_id": card.device_id, "owner_id": card.owner_id}):
            raise HTTPException(403, f"this token may not register {card.device_id}: not one of its devices")
        return await agent.register_card(data)

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
        await one_device(device_id, who)
        await agent.set_device_state(device_id, "accepted")
        return {"device_id": device_id, "state": "accepted"}

    @app.post("/pending/{device_id}/reject")
    async def reject(device_id: str, who: Admin) -> dict[str, Any]:
        await one_device(device_id, who)
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
        # the store lists only readings that carry one of the token's metrics, so a page is full
        # whenever more readings follow and the cursor never skips one
        rows = await asyncio.to_thread(
            store.readings, wanted, metric, since_s, until_s, after_id, limit, who.metrics
        )
        items = [item for row in rows if (item := limit_to_metrics(row, who.metrics)) is not None]
        next_after = rows[-1]["id"] if len(rows) == limit else None
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
                    item = limit_to_metrics(event, who.metrics)
                    if item is None:
                        continue
                    yield f"id: {item['id']}\nevent: reading\ndata: {json.dumps(item)}\n\n"
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
        """Replace a route in one step; a body that does not validate leaves it as it was."""
        return await agent.change_route(name, body.model_dump())

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

    from host_agent.terms.api import add_routes as add_terms_routes

    add_terms_routes(app, agent)
    return app
