"""The owner's console: web pages the agent serves at `/`, beside its API, on the same port.

`mount(app, agent)` adds GET /devices/{device_id}/series to the API (bearer tokens, like every
API route) and mounts the console's pages under every path the API does not take (`/`,
`/console/...`). The pages are server-rendered (Jinja2) with htmx, and uPlot draws the plots;
both are installed by scripts/install from npm at pinned versions and served from
`console/static/vendor`, so the console works offline. Every change a page makes calls the same
agent methods as the API and the CLI (signed commands, audited route changes).
"""

from __future__ import annotations

from fastapi import FastAPI

from host_agent.api.agent import AgentApi
from host_agent.console.auth import Sessions
from host_agent.console.pages import Context, Indexer, build_console, series_route

__all__ = ["mount"]


def mount(app: FastAPI, agent: AgentApi) -> None:
    """Add the series route to the API and the console's pages behind every API path."""
    context = Context(agent, Sessions(), Indexer(agent))
    series_route(app, context)
    app.mount("/", build_console(context))
