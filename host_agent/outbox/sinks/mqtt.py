"""MQTT destination: each forward published unchanged to another broker (the vendor's, any other)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from fp import topics
from host_agent.outbox.forward import Forward
from host_agent.outbox.paho_link import PahoLink

__all__ = ["MqttSink", "client_id"]


def client_id(route_id: int) -> str:
    """A client id of its own per route and start: two agents never take each other's session."""
    return f"firstparty-route-{route_id}-{random.randrange(1 << 30)}"


class MqttSink:
    """Publishes each reading's signed bytes on its device's reading topic (under `topic_prefix`)."""

    is_kept = True

    def __init__(self, destination: dict[str, Any], route_id: int):
        self.prefix: str | None = destination.get("topic_prefix")
        self.link = PahoLink(destination, client_id(route_id))

    async def deliver(self, forwards: Sequence[Forward]) -> None:
        batch: list[tuple[str, bytes, bool]] = []
        for forward in forwards:
            topic = topics.topic(forward.device_id, "reading")
            if self.prefix:
                topic = self.prefix.rstrip("/") + "/" + topic
            batch.append((topic, forward.raw, False))
        await self.link.publish_all(batch)

    async def stop(self) -> None:
        await self.link.stop()
