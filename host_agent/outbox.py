"""Durable outbox: deliver queued forwards to their destinations, at least once, with capped backoff.

The queue lives in SQLite (table `outbox`, filled by ingest in the same transaction as the
reading), so a SIGKILL loses nothing: what was not marked delivered is sent again after the
restart. Every forward carries the original signed bytes unchanged and an idempotency key
`<device>:<boot>:<seq>`, so a recipient can drop the rare second copy.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from binascii import b2a_base64
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fp import messages, topics
from host_agent import routes as routing
from host_agent.store import Store
from host_agent.tcp import no_nagle

log = logging.getLogger("firstparty.outbox")
BACKOFF_BASE_S = 0.5
BATCH = 1000


def backoff_s(attempts: int, cap_s: float, jitter: float | None = None) -> float:
    """Capped exponential backoff with jitter (between half and all of the capped delay)."""
    delay = min(cap_s, BACKOFF_BASE_S * (2 ** min(attempts, 20)))
    return delay * (0.5 + 0.5 * (random.random() if jitter is None else jitter))


class DeliveryError(Exception):
    """A destination did not take a forward; the outbox retries later."""


class MqttSink:
    """A connection to another broker (the vendor's, any other, Home Assistant's)."""

    def __init__(self, destination: dict[str, Any], client_id: str):
        self.destination = destination
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if destination.get("username"):
            self.client.username_pw_set(destination["username"], destination.get("password"))
        self.client.reconnect_delay_set(0.2, 5)  # type: ignore[arg-type]  # paho takes seconds as floats; its hint says int
        self.client.on_socket_open = no_nagle
        self.is_started = False
        self.announced: set[tuple[str, str]] = set()

    def start(self) -> None:
        if not self.is_started:
            self.client.connect_async(self.destination["host"], self.destination.get("port", 1883), 30)
            self.client.loop_start()
            self.is_started = True

    def publish_all(self, items: list[tuple[str, bytes, bool]], timeout_s: float = 5.0) -> None:
        """Publish with QoS 1 and wait for every PUBACK; raise DeliveryError otherwise (blocking)."""
        self.start()
        if not self.client.is_connected():
            deadline = time.monotonic() + 1.0
            while not self.client.is_connected() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not self.client.is_connected():
                raise DeliveryError("not connected")
        infos = [
            self.client.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in items
        ]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise DeliveryError(f"publish failed: {mqtt.error_string(info.rc)}")
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
            if not info.is_published():
                raise DeliveryError("no PUBACK in time")

    def stop(self) -> None:
        if self.is_started:
            self.client.loop_stop()
            self.client.disconnect()


class Outbox:
    """Delivers what ingest queued; one loop for all routes."""

    def __init__(self, store: Store, backoff_max_s: float = 30.0, on_routes_changed=None):
        self.store = store
        self.backoff_max_s = backoff_max_s
        self.wake = asyncio.Event()
        self.sinks: dict[int, MqttSink] = {}
        self.http = httpx.AsyncClient(timeout=5.0)
        self.on_routes_changed = on_routes_changed
        self.delivered = 0
        self.failed = 0
        self.next_due_s: float | None = None  # when the earliest waiting forward is due, from the last pass

    async def close(self) -> None:
        await self.http.aclose()
        for sink in self.sinks.values():
            await asyncio.to_thread(sink.stop)

    async def run(self) -> None:
        while True:
            # cleared before the pass reads the store: a forward queued during the pass is not missed
            self.wake.clear()
            try:
                worked = await self.deliver_due()
            except Exception:  # a failing destination or query never stops the loop
                log.exception("outbox pass failed")
                worked, self.next_due_s = False, None
            if worked:
                continue
            wait_s = 1.0 if self.next_due_s is None else max(0.0, min(1.0, self.next_due_s - time.time()))
            try:
                await asyncio.wait_for(self.wake.wait(), wait_s)
            except TimeoutError:
                pass

    def _look(self, now_s: float) -> tuple[list[dict[str, Any]], list[tuple], float | None]:
        """A pass's reads in one trip to a thread: active routes, due forwards, and else the next due time."""
        routes = self.store.routes()
        rows = self.store.due(now_s, BATCH)
        return routes, rows, None if rows else self.store.next_due_s()

    async def expire_routes(self, routes: list[dict[str, Any]] | None = None) -> set[int]:
        """Routes whose terms ran out stop by themselves (and the stop is audited); returns their ids."""
        if routes is None:
            routes = await asyncio.to_thread(self.store.routes)
        expired = [r for r in routes if routing.is_expired(r)]
        for route in expired:
            await asyncio.to_thread(self.store.remove_route, route["name"], "expired")
            log.info("route %s expired", route["name"])
        if expired and self.on_routes_changed:
            await self.on_routes_changed(expired)
        return {r["id"] for r in expired}

    async def deliver_due(self) -> bool:
        routes_list, rows, self.next_due_s = await asyncio.to_thread(self._look, time.time())
        expired = await self.expire_routes(routes_list)  # their queued forwards are gone with them
        if not rows:
            return False
        routes = {r["id"]: r for r in routes_list if r["id"] not in expired}
        by_route: dict[int, list[tuple]] = {}
        for row in rows:
            by_route.setdefault(row[1], []).append(row)
        for route_id, items in by_route.items():
            route = routes.get(route_id)
            if route is None:
                continue
            try:
                await self.deliver(route, items)
            except Exception as error:  # noqa: BLE001 - any failure of a destination means retry
                self.failed += len(items)
                log.info("route %s: %s; retrying", route["name"], error)
                for outbox_id, _route, _key, attempts, _raw, _device in items:
                    next_at = time.time() + backoff_s(attempts, self.backoff_max_s)
                    await asyncio.to_thread(self.store.mark_failed, outbox_id, next_at, str(error))
                continue
            self.delivered += len(items)
            await asyncio.to_thread(
                self.store.mark_delivered,
                [i[0] for i in items],
                route["name"],
                route.get("terms", {}),
                [i[2] for i in items],
            )
        return True

    async def deliver(self, route: dict[str, Any], items: list[tuple]) -> None:
        destination = route["destination"]
        kind = destination["type"]
        grant = route.get("grant_hex")
        if kind == "webhook":
            for _id, _route, key, _attempts, raw, device_id in items:
                headers = {
                    "content-type": 'application/cose; cose-type="cose-sign1"',
                    "idempotency-key": key,
                    "x-firstparty-device": device_id,
                }
                if grant:
                    headers["x-firstparty-grant"] = base64.b64encode(bytes.fromhex(grant)).decode()
                try:
                    response = await self.http.post(destination["url"], content=bytes(raw), headers=headers)
                except httpx.HTTPError as error:
                    raise DeliveryError(f"{type(error).__name__}: {error}") from None
                if response.status_code >= 300:
                    raise DeliveryError(f"HTTP {response.status_code}")
        elif kind == "file":
            # JSON written directly: device ids are base32 (fp.ids), keys are id:boot:seq, base64 has
            # no character JSON escapes (json.dumps cost more than the rest of a forward)
            lines = [
                f'{{"idempotency_key": "{key}", "device_id": "{device_id}", '
                f'"message": "{b2a_base64(raw, newline=False).decode()}"}}'
                for _id, _route, key, _attempts, raw, device_id in items
            ]
            await asyncio.to_thread(_append_lines, Path(destination["path"]), lines)
        elif kind == "mqtt":
            sink = self._sink(route)
            prefix = destination.get("topic_prefix")
            batch = []
            for _id, _route, _key, _attempts, raw, device_id in items:
                topic = topics.topic(device_id, "reading")
                if prefix:
                    topic = prefix.rstrip("/") + "/" + topic
                batch.append((topic, bytes(raw), False))
            await asyncio.to_thread(sink.publish_all, batch)
        elif kind == "homeassistant":
            await asyncio.to_thread(self._sink(route).publish_all, _home_assistant(self._sink(route), items))
        else:
            raise DeliveryError(f"unknown destination type {kind}")

    def _sink(self, route: dict[str, Any]) -> MqttSink:
        sink = self.sinks.get(route["id"])
        if sink is None:
            sink = self.sinks[route["id"]] = MqttSink(
                route["destination"], f"firstparty-route-{route['id']}-{random.randrange(1 << 30)}"
            )
        return sink


def _append_lines(path: Path, lines: list[str]) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        file.write("".join(line + "\n" for line in lines))
        file.flush()
        os.fsync(file.fileno())


def _home_assistant(sink: MqttSink, items: list[tuple]) -> list[tuple[str, bytes, bool]]:
    """Home Assistant MQTT discovery: one sensor per (device, metric), values as JSON state.

    Home Assistant cannot check COSE signatures, so this destination receives decoded values;
    the signed originals stay in the owner's store and go unchanged to every other destination.
    """
    prefix = sink.destination.get("discovery_prefix", "homeassistant")
    out: list[tuple[str, bytes, bool]] = []
    for _id, _route, _key, _attempts, raw, device_id in items:
        message = messages.parse_device_message(bytes(raw), "reading")
        for name, unit, value in message.body:
            state_topic = f"firstparty/{device_id}/{name}/state"
            if (device_id, name) not in sink.announced:
                config = {
                    "name": name,
                    "unique_id": f"fp_{device_id}_{name}",
                    "state_topic": state_topic,
                    "value_template": "{{ value_json.v }}",
                    "device": {"identifiers": [f"fp_{device_id}"], "name": f"Firstparty {device_id[:8]}"},
                }
                if unit:
                    config["unit_of_measurement"] = unit
                out.append(
                    (f"{prefix}/sensor/fp_{device_id}_{name}/config", json.dumps(config).encode(), True)
                )
                sink.announced.add((device_id, name))
            out.append((state_topic, json.dumps({"v": value, "u": unit}).encode(), True))
    return out
