"""The console's pages and actions (a FastAPI app mounted at `/`, behind the API's own paths).

Pages: `/` (devices), `/console/devices/{device_id}` (one device: plots, live readings, card,
status, commands), `/console/routes` (where the data goes), `/console/records` (shares, audit,
rejections, tokens). Every change is a POST carrying the session's CSRF secret, made by an admin
token, and calls the agent's own methods (`set_device_state`, `command`, `add_route`,
`change_route`, `remove_route`, `tokens.issue`, `tokens.revoke`).
"""

import asyncio
import datetime
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from fp import messages
from fp.errors import ProtocolError
from host_agent.api import tokens
from host_agent.api.agent import AgentApi
from host_agent.api.auth import Principal, Reader, limit_to_metrics
from host_agent.console import auth, series
from host_agent.errors import UserError
from host_agent.routes import rules as routing
from host_agent.store.base import Store
from host_agent.store.records import Device

log = logging.getLogger("firstparty.console")
HERE = Path(__file__).parent
STATIC = HERE / "static"
RANGES_S = {"1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "1y": 365 * 86400}
DEFAULT_POINTS = 600
MAX_RANGE_S = 20 * 365 * 86400
DEVICES_PAGE = 200  # devices per page of the devices list
STREAM_CHECK_S = 1.0  # how often an open live stream checks that its token is still live
DESTINATION_TYPES = ("mqtt", "webhook", "file")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
ROUTE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
COMMAND_OPS = ("claim", "set-interval", "reboot", "hand-over")
NOTES = {
    "accepted": "Device accepted.",
    "rejected": "Device rejected.",
    "renamed": "Device renamed.",
    "route-added": "Share added: its grant is signed and the change audited.",
    "route-changed": "Route changed: a new grant is signed and the change audited.",
    "route-removed": "Route removed (audited).",
    "revoked": "Token revoked: its sessions ended.",
}


class SignInNeeded(Exception):
    """No session, or its token was revoked: the sign-in page, 401."""


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Viewer:
    """The signed-in token and its session."""

    who: Principal
    session: auth.Session
    session_id: str

    @property
    def is_admin(self) -> bool:
        return self.who.scope == "admin"


class Indexer:
    """Keeps the series index up to date on the agent's loop (started by the first request)."""

    def __init__(self, agent: AgentApi):
        self.agent = agent
        self.task: asyncio.Task[None] | None = None

    async def ready(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._forever())

    async def _forever(self) -> None:
        store = self.agent.store
        pruned_s = time.monotonic()
        while True:
            try:
                count = await asyncio.to_thread(series.catch_up, store)
                if time.monotonic() - pruned_s > 3600:
                    pruned_s = time.monotonic()
                    await asyncio.to_thread(series.prune, store)
            except store.errors as error:
                if store.is_closed:
                    return  # the agent is stopping
                log.warning("series index: %s (tries again)", error)
                count = 0
            if count < series.BATCH:
                await asyncio.sleep(1.0)


@dataclass(slots=True)
class Context:
    agent: Any
    sessions: auth.Sessions
    indexer: Indexer


def _fmt_time(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: float | None) -> str:
    if value is None:
        return "never"
    seconds = max(0, int(time.time() - value))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _short(value: str | None, n: int = 12) -> str | None:
    return (value[:n] + "...") if value and len(value) > n else value


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value a device or a user sent is escaped
        undefined=jinja2.ChainableUndefined,  # a key a route or a status lacks renders empty
    )
    # jinja2 infers `filters` from its own table, whose functions are partly unannotated
    filters: dict[str, Callable[..., Any]] = vars(env)["filters"]
    filters["when"] = _fmt_time
    filters["ago"] = _ago
    filters["short"] = _short
    return env


def _parse_range(since_s: float | None, until_s: float | None, range_name: str | None) -> tuple[float, float]:
    now = time.time()
    if range_name is not None:
        if range_name not in RANGES_S:
            raise Refused(400, f"range must be one of {', '.join(RANGES_S)}")
        return now - RANGES_S[range_name], now
    until = now if until_s is None else until_s
    since = until - 86400 if since_s is None else since_s
    if not (math.isfinite(since) and math.isfinite(until)) or until <= since:
        raise Refused(400, "since_s must be before until_s")
    if until - since > MAX_RANGE_S:
        raise Refused(400, "a range is at most 20 years")
    return since, until


async def visible_device(ctx: Context, who: Principal, device_id: str) -> Device:
    device = await asyncio.to_thread(ctx.agent.store.device, device_id)
    if device is None or not who.can_see(device):
        raise Refused(404, f"no device {device_id} for this token")
    return device


async def series_for(
    ctx: Context, who: Principal, device_id: str, metric: str, since_s: float, until_s: float, points: int
) -> dict[str, Any]:
    """The downsampled series of one metric of one device, as `who` may see it."""
    device = await visible_device(ctx, who, device_id)
    if device.state != "accepted":
        raise Refused(404, f"no readings of {device_id}: it is not accepted")
    if who.metrics is not None and metric not in who.metrics:
        raise Refused(403, f"this token may not read {metric}")
    await ctx.indexer.ready()
    found = await asyncio.to_thread(
        series.buckets, ctx.agent.store, device_id, metric, since_s, until_s, points
    )
    return found.as_dict()


def series_route(app: FastAPI, ctx: Context) -> None:
    """GET /devices/{device_id}/series on the API (bearer tokens), the plots' data."""

    @app.get("/devices/{device_id}/series")
    async def device_series(
        device_id: str,
        who: Reader,
        metric: Annotated[str, Query(min_length=1, max_length=64)],
        since_s: float | None = None,
        until_s: float | None = None,
        points: Annotated[int, Query(ge=1, le=series.MAX_POINTS)] = DEFAULT_POINTS,
    ) -> dict[str, Any]:
        """One metric over time, in at most `points` buckets (min, avg, max, count per bucket)."""
        try:
            since, until = _parse_range(since_s, until_s, None)
            return await series_for(ctx, who, device_id, metric, since, until, points)
        except Refused as refused:
            raise HTTPException(refused.status, refused.message) from None


def _same_origin(request: Request) -> bool:
    """A POST's Origin (or Referer), when the browser sends one, must be this console's."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _viewer_or_none(request: Request) -> Viewer | None:
    ctx: Context = request.app.state.context
    session_id = request.cookies.get(auth.COOKIE)
    session = ctx.sessions.get(session_id)
    if session is None or session_id is None:
        return None
    token = await asyncio.to_thread(auth.token_by_hash, ctx.agent.store, session.token_hash)
    if token is None:
        ctx.sessions.close(session_id)
        return None
    return Viewer(Principal.of(token), session, session_id)


async def viewer(request: Request) -> Viewer:
    """The signed-in viewer, or the sign-in page (401)."""
    ctx: Context = request.app.state.context
    found = await _viewer_or_none(request)
    if found is None:
        raise SignInNeeded(
            "sign in with an API token"
            if request.cookies.get(auth.COOKIE) is None
            else "your session ended (signed out, expired, or its token was revoked)"
        )
    await ctx.indexer.ready()
    return found


async def changer(request: Request, seen: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    """The viewer of a POST: same origin, the session's CSRF secret, an admin token."""
    if not _same_origin(request):
        raise Refused(403, "refused: this request comes from another site")
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form()
        value = form.get("csrf")
        sent = value if isinstance(value, str) else None
    if not auth.is_csrf_ok(seen.session, sent):
        raise Refused(403, "refused: the form's CSRF token is missing or wrong; reload the page")
    if not seen.is_admin:
        raise Refused(403, "this token is read-only: sign in with an admin token to change anything")
    return seen


Seen = Annotated[Viewer, Depends(viewer)]
Changer = Annotated[Viewer, Depends(changer)]


def build_console(ctx: Context) -> FastAPI:
    """Return the console's application (mounted at `/` by `mount`)."""
    agent = ctx.agent
    env = _templates()
    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    console.state.context = ctx
    console.mount("/console/static", StaticFiles(directory=STATIC), name="static")
    if not (STATIC / "vendor" / "htmx.min.js").exists():
        log.warning(
            "console: htmx and uPlot are missing from %s: run `bash scripts/install`", STATIC / "vendor"
        )

    def page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        viewer: Viewer | None = values.pop("viewer", None)
        values.setdefault("note", None)
        html = env.get_template(name).render(
            viewer=viewer,
            csrf=viewer.session.csrf if viewer else "",
            path=request.url.path,
            role=getattr(agent.config, "role", "owner"),
            **values,
        )
        return HTMLResponse(html, status_code=status)

    @console.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        # a sign-in link never leaves in a Referer; "no-referrer" would make Chrome send `Origin: null`
        response.headers["Referrer-Policy"] = "same-origin"
        if not request.url.path.startswith("/console/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @console.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, error: SignInNeeded):
        if request.headers.get("hx-request") or request.url.path in ("/console/session", "/console/series"):
            return JSONResponse({"detail": "signed out: sign in again"}, status_code=401)
        response = page(request, "login.html", 401, error=str(error) or None)
        if request.cookies.get(auth.COOKIE):
            response.delete_cookie(auth.COOKIE, path="/")
        return response

    @console.exception_handler(Refused)
    async def _refused(request: Request, error: Refused):
        if request.headers.get("hx-request"):
            return HTMLResponse(
                env.get_template("_message.html").render(message=error.message, is_error=True),
                status_code=error.status,
            )
        is_page = "text/html" in request.headers.get("accept", "")
        if request.url.path in ("/console/series", "/console/session") or not is_page:
            # an API client on a path the API does not have gets the API's kind of answer
            return JSONResponse({"detail": error.message}, status_code=error.status)
        viewer = await _viewer_or_none(request)
        return page(request, "error.html", error.status, viewer=viewer, message=error.message)

    @console.exception_handler(UserError)
    async def _user_error(request: Request, error: UserError):
        return await _refused(request, Refused(400, str(error)))

    @console.exception_handler(404)
    async def _not_found(request: Request, error: Exception):
        message = getattr(error, "detail", None) or "no such page"
        return await _refused(request, Refused(404, str(message)))

    async def form_of(request: Request) -> dict[str, str]:
        form = await request.form()
        return {key: value.strip() for key, value in form.items() if isinstance(value, str)}

    # --- sign-in ---------------------------------------------------------------------------------

    def _open_session(hashed: str) -> Response:
        session_id, _ = ctx.sessions.open(hashed)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            auth.COOKIE, session_id, httponly=True, samesite="strict", path="/", max_age=auth.SESSION_IDLE_S
        )
        return response

    @console.get("/console/login")
    async def login_page(request: Request) -> HTMLResponse:
        return page(request, "login.html", error=None)

    @console.post("/console/login")
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            raise Refused(403, "refused: this request comes from another site")
        token = (await form_of(request)).get("token", "")
        found = await asyncio.to_thread(agent.store.token, token) if token else None
        if found is None:
            raise SignInNeeded("unknown or revoked token")
        return _open_session(auth.token_hash(token))

    @console.get("/console/link")
    async def link(request: Request, code: Annotated[str, Query(max_length=100)] = "") -> Response:
        """A one-time sign-in link: opens a session, then a same-site hop to `/` (the Strict
        cookie is not sent on a navigation that started on another site)."""
        hashed = await asyncio.to_thread(auth.redeem_link_code, agent.store, code) if code else None
        if hashed is None or await asyncio.to_thread(auth.token_by_hash, agent.store, hashed) is None:
            raise SignInNeeded("this sign-in link is used, expired or unknown: ask for a new one")
        response = _open_session(hashed)
        hop = page(request, "hop.html")
        hop.raw_headers.extend(h for h in response.raw_headers if h[0] == b"set-cookie")
        return hop

    @console.post("/console/logout")
    async def logout(request: Request, seen: Seen) -> Response:
        form = await form_of(request)
        if not auth.is_csrf_ok(seen.session, form.get("csrf")):
            raise Refused(403, "refused: the form's CSRF token is missing or wrong; reload the page")
        ctx.sessions.close(seen.session_id)
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(auth.COOKIE, path="/")
        return response

    @console.get("/console/session")
    async def session(seen: Seen) -> dict[str, Any]:
        return {"name": seen.who.name, "scope": seen.who.scope}

    # --- devices ---------------------------------------------------------------------------------

    async def device_lists(seen: Viewer, after: str) -> dict[str, Any]:
        """Pending devices, then a page of the others in id order (index searches, no scan)."""
        store = agent.store
        pending = []
        if seen.is_admin:
            rows = await asyncio.to_thread(store.pending_devices)
            pending = [d for d in rows if seen.who.can_see(d)]
        others: list[Device] = []
        cursor = after
        while len(others) <= DEVICES_PAGE:
            rows = await asyncio.to_thread(store.devices_after, cursor, DEVICES_PAGE + 1)
            others += [d for d in rows if seen.who.can_see(d) and d.state != "pending"]
            if len(rows) <= DEVICES_PAGE:
                break
            cursor = rows[-1].device_id
        return {
            "pending": pending,
            "devices": others[:DEVICES_PAGE],
            "next_after": others[DEVICES_PAGE - 1].device_id if len(others) > DEVICES_PAGE else None,
            "owner_id": agent.owner.owner_id,
            "is_online": _is_online,
        }

    @console.get("/")
    async def devices_page(
        request: Request,
        seen: Seen,
        after: Annotated[str, Query(max_length=24)] = "",
        note: str | None = None,
    ) -> HTMLResponse:
        lists = await device_lists(seen, after)
        return page(request, "devices.html", viewer=seen, note=NOTES.get(note or ""), **lists)

    @console.get("/console/devices-table")
    async def devices_table(
        request: Request, seen: Seen, after: Annotated[str, Query(max_length=24)] = ""
    ) -> HTMLResponse:
        return page(request, "_devices_table.html", viewer=seen, **await device_lists(seen, after))

    @console.post("/console/devices/{device_id}/{action}")
    async def device_action(request: Request, device_id: str, action: str, seen: Changer) -> Response:
        device = await visible_device(ctx, seen.who, device_id)
        if action in ("accept", "reject"):
            if device.state != "pending":
                raise Refused(400, f"{device_id} is not pending: it is {device.state}")
            await agent.set_device_state(device_id, action + "ed")
            note = action + "ed"
        elif action == "rename":
            name = (await form_of(request)).get("name", "")
            if not 1 <= len(name) <= 64:
                raise Refused(400, "a name has 1 to 64 characters")
            await asyncio.to_thread(agent.store.rename, device_id, name)
            await agent.audit("device-renamed", {"device": device_id, "name": name})
            note = "renamed"
        elif action == "command":
            return await _command(request, device_id)
        else:
            raise Refused(404, f"no action {action!r}")
        if request.headers.get("hx-request"):
            return page(
                request, "_devices_table.html", viewer=seen, note=NOTES[note], **await device_lists(seen, "")
            )
        target = f"/console/devices/{device_id}" if action == "rename" else "/"
        return RedirectResponse(f"{target}?note={note}", status_code=303)

    async def _command(request: Request, device_id: str) -> Response:
        form = await form_of(request)
        op = form.get("op", "")
        if op not in COMMAND_OPS:
            raise Refused(400, f"op must be one of {', '.join(COMMAND_OPS)}")
        args: dict[str, Any] = {}
        if op == "set-interval":
            try:
                interval_s = int(form.get("interval_s", ""))
            except ValueError:
                raise Refused(400, "interval_s must be a whole number of seconds") from None
            if not 1 <= interval_s <= 86400:
                raise Refused(400, "interval_s must be 1 to 86400")
            sensor = form.get("sensor", "")
            if not 1 <= len(sensor) <= 32:
                raise Refused(400, "sensor: the name of one of the device's sensors")
            args = {"sensor": sensor, "interval_s": interval_s}
        elif op == "hand-over":
            args = {"owner_hex": form.get("owner_hex", "")}
        result = await agent.command(device_id, op, args)
        return HTMLResponse(env.get_template("_ack.html").render(result=result.as_dict()))

    @console.get("/console/devices/{device_id}")
    async def device_page(
        request: Request,
        device_id: str,
        seen: Seen,
        note: str | None = None,
        range: Annotated[str, Query(max_length=8)] = "1d",
    ) -> HTMLResponse:
        device = await visible_device(ctx, seen.who, device_id)
        store = agent.store
        names = await asyncio.to_thread(series.metrics, store, device_id)
        if seen.who.metrics is not None:
            names = [n for n in names if n in seen.who.metrics]
        card = await asyncio.to_thread(store.card, device_id)
        return page(
            request,
            "device.html",
            viewer=seen,
            device=device,
            metrics=names,
            card_hex=card.hex() if card else "",
            is_online=device.is_online,
            ranges=list(RANGES_S),
            selected_range=range if range in RANGES_S else "1d",
            note=NOTES.get(note or ""),
            owner_id=agent.owner.owner_id,
        )

    @console.get("/console/devices/{device_id}/status")
    async def device_status(request: Request, device_id: str, seen: Seen) -> HTMLResponse:
        device = await visible_device(ctx, seen.who, device_id)
        return page(request, "_status.html", viewer=seen, device=device, is_online=device.is_online)

    @console.get("/console/series")
    async def console_series(
        seen: Seen,
        device: Annotated[str, Query(max_length=24)],
        metric: Annotated[str, Query(min_length=1, max_length=64)],
        range: Annotated[str, Query(max_length=8)] = "1d",
        points: Annotated[int, Query(ge=1, le=series.MAX_POINTS)] = DEFAULT_POINTS,
    ) -> dict[str, Any]:
        since, until = _parse_range(None, None, range)
        return await series_for(ctx, seen.who, device, metric, since, until, points)

    @console.get("/console/stream")
    async def stream(seen: Seen, device: Annotated[str, Query(max_length=24)]) -> StreamingResponse:
        found = await visible_device(ctx, seen.who, device)
        if found.state != "accepted":
            raise Refused(404, f"no readings of {device}: it is not accepted")
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        agent.live.add(queue)
        who, session_id, hashed = seen.who, seen.session_id, seen.session.token_hash

        async def still_signed_in() -> bool:
            if ctx.sessions.by_id.get(session_id) is None:
                return False
            return await asyncio.to_thread(auth.token_by_hash, agent.store, hashed) is not None

        async def events():
            try:
                yield ": firstparty console live readings\n\n"
                checked = time.monotonic()
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), STREAM_CHECK_S)
                    except TimeoutError:
                        event = None
                    if time.monotonic() - checked >= STREAM_CHECK_S:
                        checked = time.monotonic()
                        if not await still_signed_in():
                            yield "event: signed-out\ndata: {}\n\n"
                            return
                    if event is None:
                        yield ": keep-alive\n\n"
                        continue
                    if event["device_id"] != device:
                        continue
                    item = limit_to_metrics(event, who.metrics)
                    if item is None:
                        continue
                    item["time_s"] = _signed_time(event.get("message_hex"))
                    yield f"id: {item['id']}\nevent: reading\ndata: {json.dumps(item)}\n\n"
            finally:
                agent.live.discard(queue)

        return StreamingResponse(events(), media_type="text/event-stream")

    # --- where the data goes ---------------------------------------------------------------------

    async def routes_view(seen: Viewer) -> dict[str, Any]:
        store = agent.store
        routes = await asyncio.to_thread(store.routes)
        devices = [
            d for d in await asyncio.to_thread(store.devices) if seen.who.can_see(d) and d.state == "accepted"
        ]
        states = {r.id: await asyncio.to_thread(_delivery, store, r.id) for r in routes}
        now = time.time()
        rows: list[dict[str, Any]] = []
        for device in devices:
            # "*": the whole device (a route limited to metrics carries only readings made of them
            # alone, since a signed reading cannot be cut), then each metric it has reported
            names = ["*", *await asyncio.to_thread(series.metrics, store, device.device_id)]
            is_instead = any(
                r.mode == "instead-of" and not routing.is_expired(r, now) and r.shows_device(device.device_id)
                for r in routes
            )
            for name in names:
                shares = [
                    r
                    for r in routes
                    if routing.matches(r, device.device_id, [name] if name != "*" else [], now)
                    or (name == "*" and r.shows_device(device.device_id))
                ]
                own = [r for r in shares if r.devices == [device.device_id] and r.metrics == [name]]
                mode = "instead-of" if is_instead else "in-addition-to" if shares else "vendor"
                rows.append(
                    {
                        "device": device,
                        "metric": name,
                        "mode": mode,
                        "shares": shares,
                        "own": own,
                        "is_instead": is_instead,
                    }
                )
        return {"rows": rows, "routes": routes, "states": states, "destination_types": DESTINATION_TYPES}

    @console.get("/console/routes")
    async def routes_page(request: Request, seen: Seen, note: str | None = None) -> HTMLResponse:
        if not seen.is_admin:
            raise Refused(403, "where the data goes is for admin tokens (as GET /routes)")
        return page(
            request, "routes.html", viewer=seen, note=NOTES.get(note or ""), **await routes_view(seen)
        )

    @console.post("/console/routes")
    async def set_stream(request: Request, seen: Changer) -> Response:
        """The switch of one stream (device, metric): vendor only, instead of, or in addition to."""
        form = await form_of(request)
        device_id, metric, mode = form.get("device", ""), form.get("metric", ""), form.get("mode", "")
        await visible_device(ctx, seen.who, device_id)
        if not metric or len(metric) > 64:
            raise Refused(400, "metric: a metric name, or * for all")
        routes = await asyncio.to_thread(agent.store.routes)
        own = [r for r in routes if r.devices == [device_id] and r.metrics == [metric]]
        if mode == "vendor":
            for route in own:
                await agent.remove_route(route.name)
            return RedirectResponse("/console/routes?note=route-removed", status_code=303)
        if mode not in routing.MODES:
            raise Refused(400, "mode must be vendor, instead-of or in-addition-to")
        spec = {
            "destination": _destination(form),
            "devices": [device_id],
            "metrics": [metric],
            "mode": mode,
            "terms": _terms(form),
            **(
                {"needs_agreement": False} if form.get("own") == "on" else {}
            ),  # the owner's own: no agreement
        }
        name = form.get("name") or re.sub(
            r"[^A-Za-z0-9._-]", "-", f"{device_id[:8]}-{metric}".replace("*", "all")
        )
        if not ROUTE_NAME.fullmatch(name):
            raise Refused(400, "a route name is 1 to 64 letters, digits, '.', '_' or '-'")
        if own and not form.get("name"):
            await agent.change_route(own[0].name, spec)
            return RedirectResponse("/console/routes?note=route-changed", status_code=303)
        await agent.add_route(name, spec)
        return RedirectResponse("/console/routes?note=route-added", status_code=303)

    @console.post("/console/routes/{name}/{action}")
    async def route_action(request: Request, name: str, action: str, seen: Changer) -> Response:
        routes = {r.name: r for r in await asyncio.to_thread(agent.store.routes)}
        if name not in routes:
            raise Refused(404, f"no route {name!r}")
        if action == "remove":
            await agent.remove_route(name)
            return RedirectResponse("/console/routes?note=route-removed", status_code=303)
        if action in routing.MODES:
            await agent.change_route(name, dict(routes[name].spec(), mode=action))
            return RedirectResponse("/console/routes?note=route-changed", status_code=303)
        raise Refused(404, f"no action {action!r}")

    # --- shares and records ----------------------------------------------------------------------

    async def records_view(seen: Viewer) -> dict[str, Any]:
        store = agent.store
        bad = await asyncio.to_thread(store.audit_verify)
        last = await asyncio.to_thread(store.last_audit_seq)
        entries = await asyncio.to_thread(store.audit_entries, max(0, last - 50), 50)
        return {
            "grants": await asyncio.to_thread(store.routes, True),
            "agreements": await agent.terms.list(),  # both sides' signed records (docs/agreements.md)
            "audit_bad": bad,
            "audit_count": last,
            "audit": list(reversed(entries)),
            "rejection_counts": {k: v for k, v in agent.rejection_counts().items() if v},
            "rejections": await asyncio.to_thread(store.rejections, 50),
            "tokens": [
                t
                for t in await asyncio.to_thread(store.tokens)
                if seen.who.account is None or t.account == seen.who.account  # an account: its own
            ],
            "scopes": tokens.SCOPES,
        }

    @console.get("/console/records")
    async def records_page(request: Request, seen: Seen, note: str | None = None) -> HTMLResponse:
        if not seen.is_admin:
            raise Refused(403, "shares and records are for admin tokens (as GET /audit)")
        return page(
            request,
            "records.html",
            viewer=seen,
            note=NOTES.get(note or ""),
            created=None,
            **await records_view(seen),
        )

    @console.post("/console/tokens")
    async def create_token(request: Request, seen: Changer) -> HTMLResponse:
        form = await form_of(request)
        name = form.get("name", "")
        if not 1 <= len(name) <= 64:
            raise Refused(400, "a token name has 1 to 64 characters")
        devices = [d for d in form.get("devices", "").replace(",", " ").split() if d] or None
        metrics = [m for m in form.get("metrics", "").replace(",", " ").split() if m] or None
        if seen.who.devices is not None and (devices is None or not set(devices) <= set(seen.who.devices)):
            raise Refused(403, "this token may grant only its own devices")
        secret = await asyncio.to_thread(
            tokens.issue, agent.store, name, form.get("scope", "read"), devices, metrics, seen.who.account
        )
        return page(
            request,
            "records.html",
            viewer=seen,
            note=None,
            created={"name": name, "secret": secret},
            **await records_view(seen),
        )

    @console.post("/console/tokens/{name}/revoke")
    async def revoke_token(name: str, seen: Changer) -> Response:
        if seen.who.account is not None or seen.who.devices is not None:
            # a limited token may not end the sessions of tokens beyond its limits (another account's)
            raise Refused(403, "only an admin token without device or account limits revokes tokens")
        await asyncio.to_thread(tokens.revoke, agent.store, name)
        return RedirectResponse("/console/records?note=revoked", status_code=303)

    return console


def _signed_time(message_hex: str | None) -> float | None:
    """The time a reading was signed at (its iat claim), for the live plot."""
    if not message_hex:
        return None
    try:
        return messages.parse_device_message(bytes.fromhex(message_hex), "reading").time_s
    except (ProtocolError, ValueError):
        return None


def _is_online(device: Device) -> bool:
    return device.is_online


def _delivery(store: Store, route_id: int) -> dict[str, Any]:
    """A route's delivery state: queued, delivered, failing (with the last error)."""
    queued, delivered, failing, last_error = store.route_delivery(route_id)
    state = "failing" if failing else "queued" if queued else "delivered" if delivered else "nothing yet"
    return {
        "state": state,
        "queued": queued,
        "delivered": delivered,
        "last_error": last_error,
    }


def _destination(form: dict[str, str]) -> dict[str, Any]:
    kind = form.get("type", "")
    if kind == "webhook":
        return {"type": "webhook", "url": form.get("url", "")}
    if kind == "file":
        return {"type": "file", "path": form.get("path", "")}
    if kind == "mqtt":
        try:
            port = int(form.get("port") or 1883)
        except ValueError:
            raise Refused(400, "port must be a number") from None
        if not 1 <= port <= 65535:
            raise Refused(400, "port must be 1 to 65535")
        return {"type": "mqtt", "host": form.get("host", ""), "port": port}
    raise Refused(400, f"destination type must be one of {', '.join(DESTINATION_TYPES)}")


def _terms(form: dict[str, str]) -> dict[str, Any]:
    """who (recipient), why (purpose), until when (a date, UTC end of day), retention asked."""
    terms: dict[str, Any] = {}
    for key in ("recipient", "purpose"):
        if form.get(key):
            if len(form[key]) > 200:
                raise Refused(400, f"{key} has at most 200 characters")
            terms[key] = form[key]
    if form.get("until"):
        try:
            day = datetime.date.fromisoformat(form["until"])
        except ValueError:
            raise Refused(400, "until must be a date (YYYY-MM-DD)") from None
        end = datetime.datetime.combine(day, datetime.time(23, 59, 59), datetime.UTC)
        terms["expires_s"] = int(end.timestamp())
    if form.get("retention_days"):
        try:
            terms["retention_days"] = int(form["retention_days"])
        except ValueError:
            raise Refused(400, "retention_days must be a whole number") from None
    return terms
