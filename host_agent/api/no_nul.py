"""The API's refusal of a NUL byte in a request's path or query (400), before any handler runs."""

import json

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["RefuseNul"]


class RefuseNul:
    """ASGI middleware: a path or query with a NUL byte (`%00`) gets 400 before it reaches a handler.

    No name, id or metric of the API holds one, and PostgreSQL cannot take one in a text: without
    this, `GET /readings?metric=%00` was a 500 on the PostgreSQL store (found by
    tests/agent/test_api_properties.py). Bodies' texts are checked where they are read
    (host_agent.routes.rules and the pydantic models).
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or _has_nul(scope["query_string"])):
            body = json.dumps({"detail": "a NUL byte in the request's path or query"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _has_nul(query: bytes) -> bool:
    # %00 is the only way to write one (hex digits 0 have no case); a raw one is refused as well
    return b"%00" in query or b"\x00" in query
