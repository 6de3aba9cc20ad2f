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
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, TypeVarTuple

import httpx

from host_agent.outbox.forward import DeliveryError, Forward
from host_agent.outbox.sinks import Sink, make_sink
from host_agent.routes import rules as routing
from host_agent.routes.rules import Route
from host_agent.store.base import Store, write_problem

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
log = logging.getLogger("firstparty.outbox")
BACKOFF_BASE_S = 0.5
BATCH = 1000
LEASE_S = 60.0  # how long a forward one agent of a $share/ group claimed is left to it

__all__ = ["BACKOFF_BASE_S", "BATCH", "LEASE_S", "DeliveryError", "Outbox", "StoreWriteError", "backoff_s"]


def backoff_s(attempts: int, cap_s: float, jitter: float | None = None) -> float:
    """Capped exponential backoff with jitter (between half and all of the capped delay)."""
    delay = min(cap_s, BACKOFF_BASE_S * (2 ** min(attempts, 20)))
    return delay * (0.5 + 0.5 * (random.random() if jitter is None else jitter))


class StoreWriteError(Exception):
    """The store could not record what the outbox did (`reason`: disk-full or cannot-commit)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Outbox:
    """Delivers what ingest queued; one loop for all routes."""

    def __init__(
        self,
        store: Store,
        backoff_max_s: float = 30.0,
        on_routes_changed: Callable[[list[Route]], Awaitable[None]] | None = None,
        shared: bool = False,
    ):
        self.store = store
        # one of several agents on this store ($share/ group): claim forwards before delivering
        self.shared = shared
        self.backoff_max_s = backoff_max_s
        self.wake = asyncio.Event()
        self.sinks: dict[int, Sink] = {}  # the kept ones (connections), per route id
        self.http = httpx.AsyncClient(timeout=5.0)
        self.on_routes_changed = on_routes_changed
        self.delivered = 0
        self.failed = 0
        self.next_due_s: float | None = None  # when the earliest waiting forward is due, from the last pass
        # delivered, not yet marked so in the store: (route name, terms, outbox ids, keys), oldest first
        self.unmarked: list[tuple[str, dict[str, Any], list[int], list[str]]] = []
        self.held: set[int] = set()  # their outbox ids: never delivered again while held
        self.store_problem: str | None = None  # disk-full or cannot-commit while writes fail
        self.store_failures = 0
        # a route that needs an agreement delivers only what the agreement carries (host_agent.terms)
        self.gate: Callable[[Route, list[Forward]], Awaitable[list[Forward]]] | None = None

    async def close(self) -> None:
        await self.http.aclose()
        for sink in self.sinks.values():
            await sink.stop()

    async def _write(self, function: Callable[[*Ts], T], *args: *Ts) -> T:
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

    def _look(self, now_s: float) -> tuple[list[Route], list[Forward], float | None]:
        """A pass's reads in one trip to a thread: active routes, due forwards, and else the next due time."""
        routes = self.store.routes()
        if self.shared:
            rows = self.store.claim_due(now_s, BATCH, LEASE_S)
        else:
            rows = self.store.due(now_s, BATCH)
        return routes, [Forward.from_row(row) for row in rows], None if rows else self.store.next_due_s()

    async def expire_routes(self, routes: list[Route] | None = None) -> set[int]:
        """Routes whose terms ran out stop by themselves (and the stop is audited); returns their ids."""
        if routes is None:
            routes = await asyncio.to_thread(self.store.routes)
        expired = [r for r in routes if routing.is_expired(r)]
        for route in expired:
            await self._write(self.store.remove_route, route.name, "expired")
            log.info("route %s expired", route.name)
        if expired and self.on_routes_changed:
            await self.on_routes_changed(expired)
        return {r.id for r in expired}

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
        forwards = [forward for forward in rows if forward.outbox_id not in self.held]
        if not forwards:
            return False
        routes = {r.id: r for r in routes_list if r.id not in expired}
        by_route: dict[int, list[Forward]] = {}
        for forward in forwards:
            by_route.setdefault(forward.route_id, []).append(forward)
        for route_id, items in by_route.items():
            route = routes.get(route_id)
            if route is None:
                continue
            if route.needs_agreement:
                items = await self.gate(route, items) if self.gate else []
                if not items:
                    continue
            try:
                await self.deliver(route, items)
            except Exception as error:  # noqa: BLE001 - any failure of a destination means retry
                self.failed += len(items)
                log.info("route %s: %s; retrying", route.name, error)
                now_s = time.time()
                retries = [(f.outbox_id, now_s + backoff_s(f.attempts, self.backoff_max_s)) for f in items]
                await self._write(self.store.mark_failed, retries, str(error))
                continue
            self.delivered += len(items)
            outbox_ids = [f.outbox_id for f in items]
            # held first: if the mark fails, these are not delivered again (only the mark is retried)
            self.held.update(outbox_ids)
            self.unmarked.append((route.name, route.terms, outbox_ids, [f.idempotency_key for f in items]))
            await self.mark_held()
        return True

    async def deliver(self, route: Route, forwards: list[Forward]) -> None:
        """Hand a route's forwards to its destination; raise DeliveryError if it did not take them all."""
        await self._sink(route).deliver(forwards)

    def _sink(self, route: Route) -> Sink:
        # a connection (mqtt, homeassistant) is kept per route; webhook and file hold no state
        sink = self.sinks.get(route.id)
        if sink is None:
            sink = make_sink(route, self.http)
            if sink.is_kept:
                self.sinks[route.id] = sink
        return sink
