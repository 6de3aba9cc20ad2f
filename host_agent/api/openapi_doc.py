"""The agent's OpenAPI document, built from the code without a running agent (docs/openapi.json).

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


def build_offline_app() -> FastAPI:
    """Return the agent's FastAPI application with no agent behind it (for its schema only)."""
    from host_agent.api.app import build_app

    return build_app(SimpleNamespace(store=None))


def openapi_spec() -> dict[str, Any]:
    """Return the OpenAPI document the running agent serves at /openapi.json."""
    return build_offline_app().openapi()


def openapi_text() -> str:
    """The OpenAPI document as the text of docs/openapi.json (stable: indented, one final newline)."""
    return json.dumps(openapi_spec(), indent=2, ensure_ascii=False) + "\n"
