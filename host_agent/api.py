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
A token limited to devices (or to an account) sees, creates, changes and removes only the routes
of its devices, named one by one: a route for every device ('*') needs an unlimited token.

Bad input gets a 4xx, never a 500: a body over `api.max_body_bytes` is refused with 413 before it
is read (BodyLimit), texts have length caps, numbers are range-checked and finite (422), and a
live stream ends within STREAM_CHECK_S of its token's revocation. Route passwords never leave:
GET /routes shows `has_password` instead (docs/security.md).

The owner's console (host_agent.console) is mounted behind these routes, at `/` and
`/console/...`: its pages want a session (signed in with a token), and its sign-in page
/console/login and its static files /console/static hold no data.
"""

import asyncio
import json
from typing import Annotated, Any

import prometheus_client
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fp import cbor
from fp.errors import ProtocolError
from host_agent import routes as routing
from host_agent import wire
from host_agent.config import ApiConfig
from host_agent.errors import UserError
from host_agent.store import CANNOT_COMMIT, DISK_FULL

bearer = HTTPBearer(auto_error=False)
MAX_ID = 2**63 - 1  # SQLite's largest integer: ids and audit sequence numbers
STREAM_CHECK_S = 0.5  # a live stream looks again at its token this often
MAX_COMMAND_ARGS_BYTES = 3072  # a command's arguments as CBOR; the signed command is at most 4096


class BodyLimit:
    """ASGI middleware: a request body larger than `max_bytes` gets 413 before it is read.

    A declared Content-Length above the cap is refused at once; a body without one (chunked) is
    counted as it streams and refused at the first byte over. FastAPI reads a body before it
    checks the token, so without this a 100 MB POST with no token was held in memory first.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    return await self._refuse(send)
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge()
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """Raised from receive(): an HTTPException, so that FastAPI lets it through its body parser."""

    def __init__(self):
        super().__init__(413, "request body too large")


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


# finite numbers from 0 up to a bound: an integer stays an integer
ExpiresS = (
    Annotated[int, Field(ge=0, le=routing.MAX_EXPIRES_S)]
    | Annotated[float, Field(ge=0, le=routing.MAX_EXPIRES_S, allow_inf_nan=False)]
    | None
)
RetentionDays = (
    Annotated[int, Field(ge=0, le=routing.MAX_RETENTION_DAYS)]
    | Annotated[float, Field(ge=0, le=routing.MAX_RETENTION_DAYS, allow_inf_nan=False)]
    | None
)


class Terms(BaseModel):
    """The terms a route's grant states (all optional)."""

    model_config = ConfigDict(extra="forbid")
    recipient: str | None = Field(default=None, max_length=routing.MAX_TEXT["recipient"])
    purpose: str | None = Field(default=None, max_length=routing.MAX_TEXT["purpose"])
    expires_s: ExpiresS = Field(default=None, description="Unix time the route ends")
    retention_days: RetentionDays = None


class RouteSpec(BaseModel):
    """A route's destination, scope, mode and terms (PUT /routes/{name} takes the name from the path).

    `destination` is checked by host_agent.routes.validate (400 naming the key): mqtt and
    homeassistant `port` 1-65535, webhook `url` http or https, file `path` inside `files_dir`.
    """

    destination: dict[str, Any]
    devices: list[Annotated[str, Field(max_length=24)]] = Field(["*"], max_length=routing.MAX_LIST)
    metrics: list[Annotated[str, Field(max_length=routing.MAX_TEXT_DEFAULT)]] = Field(
        ["*"], max_length=routing.MAX_LIST
    )
    mode: str = Field("in-addition-to", max_length=32)
    terms: Terms = Terms()
    needs_agreement: bool = False  # deliver only what an agreement both parties signed carries

    def spec(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "devices": self.devices,
            "metrics": self.metrics,
            "mode": self.mode,
            "terms": self.terms.model_dump(exclude_none=True),
            "needs_agreement": self.needs_agreement,
        }


class RouteIn(RouteSpec):
    name: str = Field(pattern=f"^{routing.NAME.pattern}$", max_length=64)


class CardIn(BaseModel):
    card_hex: str = Field(pattern="^([0-9a-f]{2})+$", max_length=4096)


class EnrolIn(BaseModel):
    """A device's password for this agent's broker: with its card (`firstparty flash` sends both),
    or fetched by the agent from the device's LAN API (`device_url`) while its claim window is open."""

    card_hex: str | None = Field(None, pattern="^([0-9a-f]{2})+$", max_length=4096)
    password: str | None = Field(None, pattern="^[0-9a-f]{32}$")
    device_url: str | None = Field(
        None, pattern=r"^http://[A-Za-z0-9.:\[\]-]+(:[0-9]{1,5})?/?$", max_length=300
    )


class RelayIn(BaseModel):
    """A relay account for an owner's agent: it reads the readings of that owner's devices only."""

    name: str = Field(pattern="^[a-z0-9][a-z0-9_-]{0,47}$")
    owner_id: str = Field(pattern="^[a-z2-7]{24}$")


class CommandIn(BaseModel):
    """A command; hand-over takes the new owner's key as `{"owner_hex": 64 hex digits}`."""

    op: str = Field(max_length=32)
    args: dict[str, Any] = Field(
        {}, description=f"at most {cbor.MAX_DEPTH - 2} levels deep, {MAX_COMMAND_ARGS_BYTES} bytes as CBOR"
    )
    timeout_s: float | None = Field(default=None, gt=0, le=120, allow_inf_nan=False)

    @field_validator("args")
    @classmethod
    def _fits_a_command(cls, args: dict[str, Any]) -> dict[str, Any]:
        # the signed command nests args two levels down; what CBOR cannot carry is refused here
        try:
            size = len(cbor.encode({"args": {"args": args}}))
        except ProtocolError as error:
            raise ValueError(f"args cannot be sent: {error.detail}") from None
        if size > MAX_COMMAND_ARGS_BYTES:
            raise ValueError(f"args take {size} bytes as CBOR, more than {MAX_COMMAND_ARGS_BYTES}")
        return args


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
    config = getattr(agent, "config", None)  # None: the offline app of the OpenAPI document
    app.add_middleware(BodyLimit, max_bytes=(config.api if config else ApiConfig()).max_body_bytes)
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
    store_state = prometheus_client.Gauge(
        "firstparty_store_state",
        "1 for the store's health now (ok, disk-full, cannot-commit), 0 for the others",
        ["state"],
        registry=registry,
    )
    broker_restarts = prometheus_client.Gauge(
        "firstparty_broker_restarts_total", "Restarts of the embedded broker since start", registry=registry
    )
    device_update = prometheus_client.Gauge(
        "firstparty_device_update",
        "1 for each device's update state (idle, receiving, installed-on-probation, confirmed, rolled-back, refused:REASON)",
        ["device_id", "state"],
        registry=registry,
    )

    @app.exception_handler(UserError)
    async def _user_error(request: Request, error: UserError):
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError):
        # FastAPI's own answer echoes the input: a NaN it cannot write as JSON (a 500), or a
        # megabyte text back to its sender. This one names where and what, bounded.
        problems = [
            {
                "loc": [item if isinstance(item, int) else str(item)[:64] for item in problem.get("loc", ())],
                "msg": str(problem.get("msg", ""))[:300],
                "type": str(problem.get("type", "")),
            }
            for problem in error.errors()[:20]
        ]
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(ProtocolError)
    async def _protocol_error(request: Request, error: ProtocolError):
        # a value the protocol cannot carry that a model let through: the request's fault
        return JSONResponse({"detail": f"{error.reason}: {error.detail}"[:300]}, status_code=422)

    async def route_devices_allowed(who: Principal, devices: list[str]) -> bool:
        """True when this token may see, make or change a route of these devices."""
        if who.devices is None and who.account is None:
            return True
        if "*" in devices:
            return False
        for device_id in devices:
            device = await asyncio.to_thread(store.device, device_id)
            if not who.can_see(device or {"device_id": device_id, "owner_id": None}):
                return False
        return True

    async def check_route_devices(who: Principal, devices: list[str]) -> None:
        if not await route_devices_allowed(who, devices):
            raise HTTPException(
                403, "this token is limited to its devices: a route may name only those, one by one"
            )

    async def route_of(name: str, who: Principal) -> dict[str, Any]:
        for route in await asyncio.to_thread(store.routes):
            if route["name"] == name and await route_devices_allowed(who, route["devices"]):
                return route
        raise UserError(f"no route {name!r}: see `firstparty routes list`")

    async def visible_routes(who: Principal) -> list[dict[str, Any]]:
        return [
            route
            for route in await asyncio.to_thread(store.routes, True)
            if await route_devices_allowed(who, route["devices"])
        ]

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
        for state in ("ok", DISK_FULL, CANNOT_COMMIT):
            store_state.labels(state).set(1 if status["store"] == state else 0)
        broker_restarts.set(status["broker_restarts"])
        device_update.clear()
        for device in await visible_devices(who):
            device_update.labels(device["device_id"], device["update"].split(" ")[0]).set(1)
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

    @app.post("/devices/enrol", status_code=201)
    async def enrol(body: EnrolIn, who: Admin) -> dict[str, Any]:
        """Let a device connect to the embedded broker: its card and password, or its LAN address."""
        if body.device_url is not None and body.card_hex is None and body.password is None:
            return await agent.enrol_from_device(body.device_url)
        if body.device_url is None and body.card_hex is not None and body.password is not None:
            return await agent.enrol(bytes.fromhex(body.card_hex), body.password)
        raise HTTPException(422, "give card_hex and password, or device_url alone")

    @app.post("/relays", status_code=201)
    async def add_relay(body: RelayIn, who: Admin) -> dict[str, Any]:
        """A relay account on the devices' listener; its password is shown this once."""
        return await agent.add_relay(body.name, body.owner_id)

    @app.delete("/relays/{name}")
    async def remove_relay(name: str, who: Admin) -> dict[str, Any]:
        return await agent.remove_relay(name)

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
        device: Annotated[list[str] | None, Query(max_length=routing.MAX_LIST)] = None,
        metric: Annotated[str | None, Query(max_length=routing.MAX_TEXT_DEFAULT)] = None,
        since_s: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        until_s: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
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
    async def stream(
        request: Request,
        who: Reader,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> StreamingResponse:
        """Live readings as server-sent events; the stream ends when its token is revoked."""
        assert credentials is not None  # `who` exists
        allowed = {d["device_id"] for d in await visible_devices(who) if d["state"] == "accepted"}
        queue: asyncio.Queue = asyncio.Queue()
        agent.live.add(queue)
        loop = asyncio.get_running_loop()

        async def events():
            try:
                yield ": firstparty live readings\n\n"
                checked = quiet_since = loop.time()
                while True:
                    if loop.time() - checked >= STREAM_CHECK_S:
                        # revoked (by the API or the CLI, another process): the stream ends here
                        if await asyncio.to_thread(store.token, credentials.credentials) is None:
                            return
                        checked = loop.time()
                    try:
                        event = await asyncio.wait_for(queue.get(), STREAM_CHECK_S)
                    except TimeoutError:
                        if loop.time() - quiet_since >= 15:
                            yield ": keep-alive\n\n"
                            quiet_since = loop.time()
                        continue
                    quiet_since = loop.time()
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
        """The routes (removed ones too) of this token's devices; a password shows as `has_password`."""
        return [routing.without_secrets(route) for route in await visible_routes(who)]

    @app.post("/routes", status_code=201)
    async def add_route(body: RouteIn, who: Admin) -> dict[str, Any]:
        await check_route_devices(who, body.devices)
        return await agent.add_route(body.name, body.spec())

    @app.put("/routes/{name}")
    async def change_route(name: str, body: RouteSpec, who: Admin) -> dict[str, Any]:
        """Replace a route in one step; a body that does not validate leaves it as it was."""
        await route_of(name, who)
        await check_route_devices(who, body.devices)
        return await agent.change_route(name, body.spec())

    @app.delete("/routes/{name}")
    async def remove_route(name: str, who: Admin) -> dict[str, Any]:
        await route_of(name, who)
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
            for r in await visible_routes(who)
        ]

    @app.get("/owner")
    async def owner(who: Reader) -> dict[str, Any]:
        receipt_key = agent.receipts.public.hex() if agent.receipts else None
        return {
            "owner_id": agent.owner.owner_id,
            "public_key_hex": agent.owner.public.hex(),
            "receipt_key_hex": receipt_key,  # the key devices trust for this agent's receipts
        }

    @app.get("/rejections")
    async def rejections(who: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        return {
            "counts": {k: v for k, v in agent.ingest.rejected_counts.items() if v},
            "recent": await asyncio.to_thread(store.rejections, limit),
        }

    @app.get("/audit")
    async def audit_entries(
        who: Admin,
        after_seq: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        bad = await asyncio.to_thread(store.audit_verify)
        return {
            "is_intact": bad is None,
            "first_bad": bad,
            "entries": await asyncio.to_thread(store.audit_entries, after_seq, limit),
        }

    from host_agent.terms.api import add_routes as add_terms_routes

    add_terms_routes(app, agent)

    from host_agent.update_api import add_routes as add_update_routes

    add_update_routes(app, agent)

    from host_agent.console import mount

    mount(app, agent)  # last: its pages take every path the API does not
    return app
