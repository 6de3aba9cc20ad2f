"""The agent's whole HTTP face: the API (host_agent.api) with the owner's console behind it.

`build_webapp` is what `serve` runs: the API's routes, then the console's pages
(host_agent.console), which take every path the API does not. The console sits above the API (it
uses the API's tokens and scopes), so this module, above both, puts them together.

The OpenAPI document (docs/openapi.json) is built from the code without a running agent:
`build_app` reads only `agent.store` and, when the agent has one, `agent.config` (the body cap)
while it builds the application; every other attribute of the agent is read when a request
comes in. A stand-in with no store is therefore enough to build the routes and their schemas,
and nothing here touches a broker, a database or a socket.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI

from host_agent import console
from host_agent.api.app import build_app

__all__ = ["build_offline_app", "build_webapp", "openapi_spec", "openapi_text"]


def build_webapp(agent: Any) -> FastAPI:
    """Return the application `serve` runs for this agent: the API, then the console."""
    app = build_app(agent)
    console.mount(app, agent)  # last: its pages take every path the API does not
    return app


def build_offline_app() -> FastAPI:
    """Return the agent's FastAPI application with no agent behind it (for its schema only)."""
    return build_webapp(SimpleNamespace(store=None))


def openapi_spec() -> dict[str, Any]:
    """Return the OpenAPI document the running agent serves at /openapi.json."""
    return build_offline_app().openapi()


def openapi_text() -> str:
    """The OpenAPI document as the text of docs/openapi.json (stable: indented, one final newline)."""
    return json.dumps(openapi_spec(), indent=2, ensure_ascii=False) + "\n"
