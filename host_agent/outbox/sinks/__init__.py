"""Destinations of the outbox: one module per kind, each a `Sink` that takes a route's forwards.

`make_sink(route, http)` builds the sink a route's destination names. A sink raises DeliveryError
when its destination did not take every forward; the outbox then retries them all later (each
carries its idempotency key, so a recipient drops the rare second copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import httpx

from host_agent.outbox.forward import DeliveryError, Forward
from host_agent.routes.rules import Route

__all__ = ["Sink", "make_sink"]


class Sink(Protocol):
    """A destination kind: delivers a batch of forwards of one route, or raises DeliveryError."""

    is_kept: bool  # holds a connection: the outbox keeps it per route, and stops it at the end

    async def deliver(self, forwards: Sequence[Forward]) -> None: ...

    async def stop(self) -> None: ...


def make_sink(route: Route, http: httpx.AsyncClient) -> Sink:
    """The sink of a route's destination (host_agent.routes.rules.validate checked its keys)."""
    from host_agent.outbox.sinks import file, homeassistant, mqtt, webhook

    destination = route.destination
    kind = destination["type"]
    if kind == "webhook":
        return webhook.WebhookSink(destination, route.grant_hex, http)
    if kind == "file":
        return file.FileSink(destination)
    if kind == "mqtt":
        return mqtt.MqttSink(destination, route.id)
    if kind == "homeassistant":
        return homeassistant.HomeAssistantSink(destination, route.id)
    raise DeliveryError(f"unknown destination type {kind}")
