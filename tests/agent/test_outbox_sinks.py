"""The outbox's destinations: one Sink per kind, forwards as frozen values (no I/O here; the
deliveries themselves are tested for real in test_routes.py and test_home_assistant.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os

import httpx
import pytest

from host_agent.outbox.forward import DeliveryError, Forward
from host_agent.outbox.sinks import file, homeassistant, make_sink, mqtt, webhook
from host_agent.routes.rules import Route
from tests.agent.conftest import FakeDevice


def test_a_store_row_becomes_a_frozen_forward_with_its_bytes():
    forward = Forward.from_row((7, 2, "dev:1:3", 0, memoryview(b"\xd2abc"), "dev"))
    assert (forward.outbox_id, forward.route_id, forward.idempotency_key, forward.raw) == (
        7,
        2,
        "dev:1:3",
        b"\xd2abc",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        forward.attempts = 1  # type: ignore[misc]


def test_each_destination_kind_has_its_sink_and_an_unknown_kind_is_refused(tmp_path):
    http = httpx.AsyncClient()
    kinds = {
        "webhook": ({"url": "http://127.0.0.1:9/"}, webhook.WebhookSink),
        "file": ({"path": str(tmp_path / "out.jsonl")}, file.FileSink),
        "mqtt": ({"host": "127.0.0.1"}, mqtt.MqttSink),
        "homeassistant": ({"host": "127.0.0.1"}, homeassistant.HomeAssistantSink),
    }
    for kind, (destination, sink_type) in kinds.items():
        sink = make_sink(Route("r", dict(destination, type=kind), id=1), http)
        assert isinstance(sink, sink_type)
        assert sink.is_kept == (kind in ("mqtt", "homeassistant"))
    with pytest.raises(DeliveryError):
        make_sink(Route("r", {"type": "carrier-pigeon"}, id=1), http)


def test_the_file_sink_appends_one_json_line_per_forward(tmp_path):
    out = tmp_path / "deep" / "out.jsonl"
    sink = file.FileSink({"path": str(out)})
    forwards = [Forward(1, 1, f"dev:1:{seq}", 0, bytes([seq]) * 3, "dev") for seq in range(2)]
    asyncio.run(sink.deliver(forwards))
    asyncio.run(sink.deliver(forwards[:1]))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["idempotency_key"] for line in lines] == ["dev:1:0", "dev:1:1", "dev:1:0"]


def test_home_assistant_announces_each_metric_once_then_sends_only_states():
    device = FakeDevice(os.urandom(32))
    sink = homeassistant.HomeAssistantSink({"host": "127.0.0.1", "discovery_prefix": "ha"}, 1)
    reading = Forward(
        1, 1, "k", 0, device.reading(values=[("temp", "Cel", 21.5), ("rh", "%RH", 40.0)]), device.device_id
    )
    batch, announced = sink.messages([reading, reading])
    configs = [topic for topic, _, _ in batch if topic.startswith("ha/sensor/")]
    assert len(configs) == 2 and len(batch) == 2 + 4
    sink.announced |= announced
    again, _ = sink.messages([reading])
    assert [topic for topic, _, _ in again] == [
        f"firstparty/{device.device_id}/temp/state",
        f"firstparty/{device.device_id}/rh/state",
    ]
