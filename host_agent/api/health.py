"""The agent's own state: /healthz (open), /metrics, /status, /rejections and /audit."""

import asyncio
from typing import Annotated

import prometheus_client
from fastapi import APIRouter, Query, Request, Response

from host_agent.api.agent import AgentDep
from host_agent.api.auth import Admin, Reader
from host_agent.api.models import AuditOut, HealthOut, RejectionsOut, StatusOut
from host_agent.api.scope import device_out, visible_devices
from host_agent.store.base import CANNOT_COMMIT, DISK_FULL

__all__ = ["MAX_ID", "Gauges", "router"]

MAX_ID = 2**63 - 1  # SQLite's largest integer: ids and audit sequence numbers
router = APIRouter()


class Gauges:
    """The Prometheus gauges of one application, set from the agent's state at each scrape."""

    def __init__(self) -> None:
        self.registry = registry = prometheus_client.CollectorRegistry()
        self.accepted = prometheus_client.Gauge(
            "firstparty_accepted_total", "Messages accepted", ["kind"], registry=registry
        )
        self.rejected = prometheus_client.Gauge(
            "firstparty_rejected_total", "Messages rejected", ["reason"], registry=registry
        )
        self.outbox_pending = prometheus_client.Gauge(
            "firstparty_outbox_pending", "Forwards waiting for delivery", registry=registry
        )
        self.delivered = prometheus_client.Gauge(
            "firstparty_outbox_delivered_total", "Forwards delivered since start", registry=registry
        )
        self.store_state = prometheus_client.Gauge(
            "firstparty_store_state",
            "1 for the store's health now (ok, disk-full, cannot-commit), 0 for the others",
            ["state"],
            registry=registry,
        )
        self.broker_restarts = prometheus_client.Gauge(
            "firstparty_broker_restarts_total",
            "Restarts of the embedded broker since start",
            registry=registry,
        )
        self.device_update = prometheus_client.Gauge(
            "firstparty_device_update",
            "1 for each device's update state (idle, receiving, installed-on-probation, confirmed,"
            " rolled-back, refused:REASON)",
            ["device_id", "state"],
            registry=registry,
        )


@router.get(
    "/healthz",
    responses={
        503: {"description": "Not ok: the store cannot commit or the broker is disconnected (same body)"}
    },
)
async def healthz(response: Response, agent: AgentDep) -> HealthOut:
    """200 when the store commits and the broker is connected, else 503; the body says which."""
    status = agent.status()
    ok = status["store"] == "ok" and status["broker"] == "connected"
    if not ok:
        response.status_code = 503
    return HealthOut(ok=ok, store=status["store"], broker=status["broker"], role=status["role"])


@router.get("/metrics")
async def metrics(request: Request, who: Reader, agent: AgentDep) -> Response:
    gauges: Gauges = request.app.state.gauges
    status = agent.status()
    for kind, count in status["accepted"].items():
        gauges.accepted.labels(kind).set(count)
    for reason, count in agent.rejection_counts().items():
        gauges.rejected.labels(reason).set(count)
    gauges.outbox_pending.set(await asyncio.to_thread(agent.store.outbox_pending))
    gauges.delivered.set(status["outbox_delivered"])
    for state in ("ok", DISK_FULL, CANNOT_COMMIT):
        gauges.store_state.labels(state).set(1 if status["store"] == state else 0)
    gauges.broker_restarts.set(status["broker_restarts"])
    gauges.device_update.clear()
    for device in await visible_devices(agent.store, who):
        update = device_out(device).update
        gauges.device_update.labels(device.device_id, update.split(" ")[0]).set(1)
    return Response(
        prometheus_client.generate_latest(gauges.registry), media_type=prometheus_client.CONTENT_TYPE_LATEST
    )


@router.get("/status")
async def status(who: Reader, agent: AgentDep) -> StatusOut:
    return agent.status()


@router.get("/rejections")
async def rejections(
    who: Admin, agent: AgentDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> RejectionsOut:
    return RejectionsOut(
        counts={k: v for k, v in agent.rejection_counts().items() if v},
        recent=await asyncio.to_thread(agent.store.rejections, limit),
    )


@router.get("/audit")
async def audit_entries(
    who: Admin,
    agent: AgentDep,
    after_seq: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditOut:
    bad = await asyncio.to_thread(agent.store.audit_verify)
    return AuditOut(
        is_intact=bad is None,
        first_bad=bad,
        entries=await asyncio.to_thread(agent.store.audit_entries, after_seq, limit),
    )
