"""The open HTTP API (FastAPI): devices, cards, readings, live stream, routes, commands, audit.

`build_app` puts together one router per area (host_agent.api.health, .devices, .readings,
.routes, .terms); each reaches the agent through the typed interface of host_agent.api.agent,
and the token's holder through host_agent.api.auth.

Every endpoint needs a bearer token (`firstparty tokens create`) but these: /healthz; the
description of the API, which holds no data: the OpenAPI document at /openapi.json and its pages
/docs (Swagger UI) and /redoc; and first-party terms as a second party answers any owner
(host_agent/api/terms.py): its policy at /.well-known/firstparty-terms, /terms/roster, and the
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

The owner's console (host_agent.console) is mounted behind these routes by host_agent.webapp, at
`/` and `/console/...`: its pages want a session (signed in with a token), and its sign-in page
/console/login and its static files /console/static hold no data.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fp.errors import ProtocolError
from host_agent.api import devices, health, readings, routes, updates
from host_agent.api.body_limit import BodyLimit
from host_agent.api.no_nul import RefuseNul
from host_agent.api.terms import add_routes as add_terms_routes
from host_agent.config import ApiConfig
from host_agent.errors import UserError

__all__ = ["build_app"]


async def _user_error(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=400)


async def _invalid(request: Request, error: Exception) -> JSONResponse:
    # FastAPI's own answer echoes the input: a NaN it cannot write as JSON (a 500), or a
    # megabyte text back to its sender. This one names where and what, bounded.
    assert isinstance(error, RequestValidationError)
    problems = [
        {
            "loc": [item if isinstance(item, int) else str(item)[:64] for item in problem.get("loc", ())],
            "msg": str(problem.get("msg", ""))[:300],
            "type": str(problem.get("type", "")),
        }
        for problem in error.errors()[:20]
    ]
    return JSONResponse({"detail": problems}, status_code=422)


async def _protocol_error(request: Request, error: Exception) -> JSONResponse:
    # a value the protocol cannot carry that a model let through: the request's fault
    assert isinstance(error, ProtocolError)
    return JSONResponse({"detail": f"{error.reason}: {error.detail}"[:300]}, status_code=422)


def build_app(agent: Any) -> FastAPI:
    """Return the FastAPI application serving this agent (host_agent.api.agent.AgentApi).

    Reads only `agent.store` and `agent.config` (when it has one) now; the rest when requests come.
    """
    app = FastAPI(
        title="Firstparty host agent",
        version="1",
        description="The owner's copy of every signed reading, and control of the devices.",
        swagger_ui_oauth2_redirect_url=None,  # bearer tokens only: no OAuth2 page to leave open
    )
    app.state.store = agent.store
    app.state.agent = agent
    app.state.gauges = health.Gauges()
    config = getattr(agent, "config", None)  # None: the offline app of the OpenAPI document
    app.add_middleware(BodyLimit, max_bytes=(config.api if config else ApiConfig()).max_body_bytes)
    app.add_middleware(RefuseNul)
    app.add_exception_handler(UserError, _user_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(ProtocolError, _protocol_error)
    for area in (health, devices, readings, routes, updates):
        # the routers' routes themselves, in order: this FastAPI's include_router would wrap each
        # router in one lazy entry, and app.routes (the docs' checks, the console's fallback
        # behind every API path) must list each route
        app.router.routes.extend(area.router.routes)
    add_terms_routes(app, agent)
    return app
