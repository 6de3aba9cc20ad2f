"""Home Assistant destination: MQTT discovery, one sensor per (device, metric), values as JSON state.

Home Assistant cannot check COSE signatures, so this destination receives decoded values; the
signed originals stay in the owner's store and go unchanged to every other destination.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fp import messages
from host_agent.outbox.forward import Forward
from host_agent.outbox.paho_link import PahoLink
from host_agent.outbox.sinks.mqtt import client_id

__all__ = ["HomeAssistantSink"]


class HomeAssistantSink:
    """Announces each (device, metric) once (retained config), then publishes its state."""

    is_kept = True

    def __init__(self, destination: dict[str, Any], route_id: int):
        self.discovery_prefix: str = destination.get("discovery_prefix", "homeassistant")
        self.link = PahoLink(destination, client_id(route_id))
        self.announced: set[tuple[str, str]] = set()

    async def deliver(self, forwards: Sequence[Forward]) -> None:
        batch, announced = self.messages(forwards)
        await self.link.publish_all(batch)
        self.announced |= announced  # a config not acknowledged is sent again with the retry

    def messages(
        self, forwards: Sequence[Forward]
    ) -> tuple[list[tuple[str, bytes, bool]], set[tuple[str, str]]]:
        """The (topic, payload, retain) to publish, and the sensors this batch announces."""
        out: list[tuple[str, bytes, bool]] = []
        announced: set[tuple[str, str]] = set()  # discovery configs in this batch
        for forward in forwards:
            device_id = forward.device_id
            message = messages.parse_device_message(forward.raw, "reading")
            for name, unit, value in message.body:
                state_topic = f"firstparty/{device_id}/{name}/state"
                if (device_id, name) not in self.announced and (device_id, name) not in announced:
                    config: dict[str, Any] = {
                        "name": name,
                        "unique_id": f"fp_{device_id}_{name}",
                        "state_topic": state_topic,
                        "value_template": "{{ value_json.v }}",
                        "device": {"identifiers": [f"fp_{device_id}"], "name": f"Firstparty {device_id[:8]}"},
                    }
                    if unit:
                        config["unit_of_measurement"] = unit
                    topic = f"{self.discovery_prefix}/sensor/fp_{device_id}_{name}/config"
                    out.append((topic, json.dumps(config).encode(), True))
                    announced.add((device_id, name))
                out.append((state_topic, json.dumps({"v": value, "u": unit}).encode(), True))
        return out, announced

    async def stop(self) -> None:
        await self.link.stop()
