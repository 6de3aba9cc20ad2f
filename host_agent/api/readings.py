"""Readings: pages of stored readings, and the live stream (server-sent events)."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from host_agent.api.agent import AgentDep
from host_agent.api.auth import Reader, bearer, limit_to_metrics
from host_agent.api.health import MAX_ID
from host_agent.api.models import ReadingsPage
from host_agent.api.scope import visible_devices
from host_agent.routes import rules as routing

__all__ = ["STREAM_CHECK_S", "router"]

STREAM_CHECK_S = 0.5  # a live stream looks again at its token this often
router = APIRouter()


@router.get("/readings")
async def readings(
    who: Reader,
    agent: AgentDep,
    device: Annotated[list[str] | None, Query(max_length=routing.MAX_LIST)] = None,
    metric: Annotated[str | None, Query(max_length=routing.MAX_TEXT_DEFAULT)] = None,
    since_s: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    until_s: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ReadingsPage:
    allowed = [d.device_id for d in await visible_devices(agent.store, who) if d.state == "accepted"]
    wanted = [d for d in device if d in allowed] if device else allowed
    if who.metrics is not None and metric is not None and metric not in who.metrics:
        raise HTTPException(403, f"this token may not read {metric}")
    # the store lists only readings that carry one of the token's metrics, so a page is full
    # whenever more readings follow and the cursor never skips one
    rows = await asyncio.to_thread(
        agent.store.readings, wanted, metric, since_s, until_s, after_id, limit, who.metrics
    )
    items = [item for row in rows if (item := limit_to_metrics(row, who.metrics)) is not None]
    next_after = rows[-1]["id"] if len(rows) == limit else None
    return ReadingsPage(items=items, next_after_id=next_after)


@router.get("/stream", responses={200: {"content": {"text/event-stream": {}}}})
async def stream(
    request: Request,
    who: Reader,
    agent: AgentDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> StreamingResponse:
    """Live readings as server-sent events; the stream ends when its token is revoked."""
    assert credentials is not None  # `who` exists
    store = agent.store
    allowed = {d.device_id for d in await visible_devices(store, who) if d.state == "accepted"}
    queue: asyncio.Queue[Any] = asyncio.Queue()
    agent.live.add(queue)
    loop = asyncio.get_running_loop()

    async def events() -> AsyncIterator[str]:
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
