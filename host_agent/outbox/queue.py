"""Durable outbox: deliver queued forwards to their destinations, at least once, with capped backoff.

The queue lives in SQLite (table `outbox`, filled by ingest in the same transaction as the
reading), so a SIGKILL loses nothing: what was not marked delivered is sent again after the
restart. Every forward carries the original signed bytes unchanged and an idempotency key
`<device>:<boot>:<seq>`, so a recipient can drop the rare second copy.

When the store cannot write (a full disk), a forward a destination took but the store could not
mark delivered is held in memory and only its mark is retried, never the delivery; the outbox
delivers nothing new meanwhile and waits a capped exponential pause between tries (`store_problem`
says why, for /healthz). Only a crash in that state sends those forwards a second time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import threading
import time
from binascii import b2a_base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fp import messages, topics
from host_agent.bus.tcp import no_nagle
from host_agent.routes import rules as routing
from host_agent.store.base import Store, write_problem

log = logging.getLogger("firstparty.outbox")
BACKOFF_BASE_S = 0.5
BATCH = 1000
LEASE_S = 60.0  # how long a forward one agent of a $share/ group claimed is left to it
CONNECT_TIMEOUT_S = 5.0
SINK_KEEPALIVE_S = 30
SINK_INFLIGHT = 1000  # forwards a sink has sent and not seen acknowledged (paho's default: 20)


def backoff_s(attempts: int, cap_s: float, jitter: float | None = None) -> float:
    """Capped exponential backoff with jitter (between half and all of the capped delay)."""
    delay = min(cap_s, BACKOFF_BASE_S * (2 ** min(attempts, 20)))
    return delay * (0.5 + 0.5 * (random.random() if jitter is None else jitter))


class DeliveryError(Exception):
    """A destination did not take a forward; the outbox retries later."""


class StoreWriteError(Exception):
    """The store could not record what the outbox did (`reason`: disk-full or cannot-commit)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class MqttSink:
    """A connection to another broker (the vendor's, any other, Home Assistant's), on the agent's loop.

    paho runs without a thread of its own: the event loop watches its socket through paho's
    external-loop callbacks (as aiomqtt uses them), so forwards are written and their PUBACKs read
    on the loop, with no hand-off to a network thread and back for each batch (docs/benchmarks.md,
    "Host agent"). Connecting (name lookup, TCP handshake) runs in a thread. A connection that
    cannot be made or drops fails the batch; the outbox retries it, and the retry reconnects.
    """

    def __init__(self, destination: dict[str, Any], client_id: str):
        self.destination = destination
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if destination.get("username"):
            self.client.username_pw_set(destination["username"], destination.get("password"))
        self.client.max_inflight_messages_set(SINK_INFLIGHT)
        self.client.on_socket_open = self._socket_open
        self.client.on_socket_close = self._socket_close
        self.client.on_socket_register_write = self._register_write
        self.client.on_socket_unregister_write = self._unregister_write
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_publish = self._published
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        self.connack: asyncio.Future | None = None
        self.waiting: dict[int, asyncio.Future] = {}  # packet id -> its PUBACK
        self.keepalive: asyncio.Task | None = None
        self.announced: set[tuple[str, str]] = set()

    # paho calls these on the loop, or in the connecting thread: file numbers, not sockets, go to
    # the loop (a socket paho closes in that thread has lost its number when the loop gets to it)
    def _on_loop(self, function, *args) -> None:
        assert self.loop is not None
        if threading.get_ident() == self.loop_thread:
            function(*args)
        else:
            self.loop.call_soon_threadsafe(function, *args)

    def _socket_open(self, client, userdata, sock) -> None:
        no_nagle(client, userdata, sock)
        self._on_loop(self._watch, sock.fileno(), False)

    def _register_write(self, client, userdata, sock) -> None:
        self._on_loop(self._watch, sock.fileno(), True)

    def _socket_close(self, client, userdata, sock) -> None:
        self._on_loop(self._unwatch, sock.fileno(), False)

    def _unregister_write(self, client, userdata, sock) -> None:
        self._on_loop(self._unwatch, sock.fileno(), True)

    def _watch(self, fd: int, is_write: bool) -> None:
        assert self.loop is not None
        if is_write:
            self.loop.add_writer(fd, self.client.loop_write)
        else:
            self.loop.add_reader(fd, self.client.loop_read)

    def _unwatch(self, fd: int, is_write: bool) -> None:
        assert self.loop is not None
        self.loop.remove_writer(fd)
        if not is_write:
            self.loop.remove_reader(fd)

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        self._on_loop(self._settle_connack, reason_code)

    def _settle_connack(self, reason_code) -> None:
        if self.connack and not self.connack.done():
            if reason_code.is_failure:
                self.connack.set_exception(DeliveryError(f"the broker refused the connection: {reason_code}"))
            else:
                self.connack.set_result(None)

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        self._on_loop(self._fail_waiting, f"connection lost ({reason_code})")

    def _fail_waiting(self, why: str) -> None:
        for future in [*self.waiting.values(), self.connack]:
            if future and not future.done():
                future.set_exception(DeliveryError(why))
        self.waiting.clear()

    def _published(self, client, userdata, mid, reason_code, properties) -> None:
        future = self.waiting.pop(mid, None)
        if future and not future.done():
            future.set_result(None)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.client.is_connected():
                self.client.loop_misc()  # a PINGREQ when due; a link gone silent is dropped

    async def _connect(self, timeout_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        if self.keepalive is None:
            self.keepalive = asyncio.create_task(self._keep_alive())
        self.connack = self.loop.create_future()
        host, port = self.destination["host"], self.destination.get("port", 1883)
        try:
            connect = asyncio.to_thread(self.client.connect, host, port, SINK_KEEPALIVE_S)
            await asyncio.wait_for(connect, timeout_s)
            await asyncio.wait_for(asyncio.shield(self.connack), timeout_s)
        except (OSError, TimeoutError) as error:
            raise DeliveryError(f"cannot connect to {host}:{port}: {type(error).__name__} {error}") from None

    async def publish_all(self, items: list[tuple[str, bytes, bool]], timeout_s: float = 5.0) -> None:
        """Publish with QoS 1 and wait for every PUBACK; raise DeliveryError otherwise."""
        if not self.client.is_connected():
            await self._connect(CONNECT_TIMEOUT_S)
        assert self.loop is not None
        mids = []
        try:
            for topic, payload, retain in items:
                info = self.client.publish(topic, payload, qos=1, retain=retain)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise DeliveryError(f"publish failed: {mqtt.error_string(info.rc)}")
                self.waiting[info.mid] = self.loop.create_future()
                mids.append(info.mid)
            await asyncio.wait_for(asyncio.gather(*(self.waiting[mid] for mid in mids)), timeout_s)
        except TimeoutError:
            raise DeliveryError("no PUBACK in time") from None
        finally:
            for mid in mids:
                self.waiting.pop(mid, None)

    async def stop(self) -> None:
        if self.keepalive:
            self.keepalive.cancel()
        sock = self.client.socket()
        if sock is None or self.loop is None:
            return
        if self.client.is_connected():
            self.client.disconnect()
            self.client.loop_write()  # the DISCONNECT now: the loop may not turn again for it
        sock = self.client.socket()
        if sock is not None:  # paho closes it once the DISCONNECT is out; else we do
            self._unwatch(sock.fileno(), False)
            sock.close()


class Outbox:
    """Delivers what ingest queued; one loop for all routes."""

    def __init__(
        self, store: Store, backoff_max_s: float = 30.0, on_routes_changed=None, shared: bool = False
    ):
        self.store = store
        # one of several agents on this store ($share/ group): claim forwards before delivering
        self.shared = shared
        self.backoff_max_s = backoff_max_s
        self.wake = asyncio.Event()
        self.sinks: dict[int, MqttSink] = {}
        self.http = httpx.AsyncClient(timeout=5.0)
        self.on_routes_changed = on_routes_changed
        self.delivered = 0
        self.failed = 0
        self.next_due_s: float | None = None  # when the earliest waiting forward is due, from the last pass
        # delivered, not yet marked so in the store: (route name, terms, outbox ids, keys), oldest first
        self.unmarked: list[tuple[str, dict, list[int], list[str]]] = []
        self.held: set[int] = set()  # their outbox ids: never delivered again while held
        self.store_problem: str | None = None  # disk-full or cannot-commit while writes fail
        self.store_failures = 0
        # a route that needs an agreement delivers only what the agreement carries (host_agent.terms)
        self.gate: Callable[[dict[str, Any], list[tuple]], Awaitable[list[tuple]]] | None = None

    async def close(self) -> None:
        await self.http.aclose()
        for sink in self.sinks.values():
            await sink.stop()

    async def _write(self, function, *args) -> Any:
        """Run a store write in a thread; a failure becomes StoreWriteError with its health reason."""
        try:
            return await asyncio.to_thread(function, *args)
        except (*self.store.errors, OSError) as error:
            raise StoreWriteError(write_problem(error), str(error)) from None

    async def run(self) -> None:
        while True:
            # cleared before the pass reads the store: a forward queued during the pass is not missed
            self.wake.clear()
            try:
                worked = await self.deliver_due()
                if self.store_problem:
                    log.warning("outbox: the store writes again")
                self.store_problem, self.store_failures = None, 0
            except StoreWriteError as error:
                # new readings cannot help a store that cannot write: wait, whatever wakes us
                if self.store_problem is None:
                    log.error("outbox: %s; holding %d delivered forwards until it can", error, len(self.held))
                self.store_problem = error.reason
                pause_s = backoff_s(self.store_failures, self.backoff_max_s)
                self.store_failures += 1
                await asyncio.sleep(pause_s)
                continue
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
        if self.shared:
            rows = self.store.claim_due(now_s, BATCH, LEASE_S)
        else:
            rows = self.store.due(now_s, BATCH)
        return routes, rows, None if rows else self.store.next_due_s()

    async def expire_routes(self, routes: list[dict[str, Any]] | None = None) -> set[int]:
        """Routes whose terms ran out stop by themselves (and the stop is audited); returns their ids."""
        if routes is None:
            routes = await asyncio.to_thread(self.store.routes)
        expired = [r for r in routes if routing.is_expired(r)]
        for route in expired:
            await self._write(self.store.remove_route, route["name"], "expired")
            log.info("route %s expired", route["name"])
        if expired and self.on_routes_changed:
            await self.on_routes_changed(expired)
        return {r["id"] for r in expired}

    async def mark_held(self) -> None:
        """Mark delivered what destinations took and the store has not recorded yet, oldest first."""
        while self.unmarked:
            route_name, terms, outbox_ids, keys = self.unmarked[0]
            await self._write(self.store.mark_delivered, outbox_ids, route_name, terms, keys)
            self.unmarked.pop(0)
            self.held.difference_update(outbox_ids)

    async def deliver_due(self) -> bool:
        await self.mark_held()  # before anything new goes out
        if self.shared:  # claiming writes
            routes_list, rows, self.next_due_s = await self._write(self._look, time.time())
        else:
            routes_list, rows, self.next_due_s = await asyncio.to_thread(self._look, time.time())
        expired = await self.expire_routes(routes_list)  # their queued forwards are gone with them
        rows = [row for row in rows if row[0] not in self.held]
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
            if route.get("needs_agreement"):
                items = await self.gate(route, items) if self.gate else []
                if not items:
                    continue
            try:
                await self.deliver(route, items)
            except Exception as error:  # noqa: BLE001 - any failure of a destination means retry
                self.failed += len(items)
                log.info("route %s: %s; retrying", route["name"], error)
                now_s = time.time()
                retries = [(item[0], now_s + backoff_s(item[3], self.backoff_max_s)) for item in items]
                await self._write(self.store.mark_failed, retries, str(error))
                continue
            self.delivered += len(items)
            outbox_ids = [i[0] for i in items]
            # held first: if the mark fails, these are not delivered again (only the mark is retried)
            self.held.update(outbox_ids)
            self.unmarked.append((route["name"], route.get("terms", {}), outbox_ids, [i[2] for i in items]))
            await self.mark_held()
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
            await sink.publish_all(batch)
        elif kind == "homeassistant":
            sink = self._sink(route)
            batch, announced = _home_assistant(sink, items)
            await sink.publish_all(batch)
            sink.announced |= announced  # a config not acknowledged is sent again with the retry
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


def _home_assistant(sink: MqttSink, items: list[tuple]) -> tuple[list[tuple[str, bytes, bool]], set]:
    """Home Assistant MQTT discovery: one sensor per (device, metric), values as JSON state.

    Home Assistant cannot check COSE signatures, so this destination receives decoded values;
    the signed originals stay in the owner's store and go unchanged to every other destination.
    """
    prefix = sink.destination.get("discovery_prefix", "homeassistant")
    out: list[tuple[str, bytes, bool]] = []
    announced: set[tuple[str, str]] = set()  # discovery configs in this batch
    for _id, _route, _key, _attempts, raw, device_id in items:
        message = messages.parse_device_message(bytes(raw), "reading")
        for name, unit, value in message.body:
            state_topic = f"firstparty/{device_id}/{name}/state"
            if (device_id, name) not in sink.announced and (device_id, name) not in announced:
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
                announced.add((device_id, name))
            out.append((state_topic, json.dumps({"v": value, "u": unit}).encode(), True))
    return out, announced
