"""The agent service: broker -> ingest -> store -> routes -> outbox, plus commands and the API.

One asyncio loop: the broker connections (host_agent.bus.connection) read and acknowledge on it, and the
outbox's paho clients publish and read their acknowledgements on it too; SQLite work runs in
threads (asyncio.to_thread).
Start it with `Agent(config).run()` (blocking) or
`await Agent(config).run_async()`; `agent.request_stop()` ends it from any thread.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fp import topics
from fp.errors import ProtocolError
from host_agent import wire
from host_agent.api.agent import RouteChange
from host_agent.api.models import EnrolledOut, RegisteredOut, RelayOut, RelayRemovedOut, StatusOut
from host_agent.bus.broker import EmbeddedBroker
from host_agent.bus.connection import Bus, Delivery, Inbox
from host_agent.commands.control import Commander, CommandResult
from host_agent.config import Config
from host_agent.errors import UserError
from host_agent.ingest.intake import Checked, Ingest, Outcome
from host_agent.ingest.receipts import RECEIPT_KINDS, ReceiptBook, Taken
from host_agent.outbox.queue import Outbox
from host_agent.owner import Owner
from host_agent.routes import grants
from host_agent.routes import rules as routing
from host_agent.store import open_store
from host_agent.store.base import make_private_dir, write_problem
from host_agent.terms import mqtt as terms_mqtt
from host_agent.terms.desk import TermsDesk
from host_agent.updates.desk import UpdateDesk

log = logging.getLogger("firstparty.agent")
MAX_BATCH = 2000  # readings per commit at most; the embedded broker keeps twice this in flight
LIVE_QUEUE = 1000
RELAY_CLAIMS_S = 1.0  # how soon a relay reads the readings of a device its owner just claimed
# The cyclic garbage collector's thresholds while an agent runs. With CPython's (700, 10, 10) it
# ran about 400 times per 20,000 readings, each pass walking the messages of the batch in hand
# (alive until its commit), about 7 % of the agent's time; with these about 20 times, nearly all
# at start-up (docs/benchmarks.md, "Host agent"). Reference counting frees the rest at once.
GC_THRESHOLDS = (10_000, 20, 100)
RECEIPT_KEY_FILE = "receipt.key"  # the agent's receipt key (host_agent.ingest.receipts), 0600
RECEIPT_TICK_S = 0.2


class Agent:
    """The host agent in the owner or vendor role."""

    def __init__(self, config: Config):
        self.config = config
        make_private_dir(config.data_dir)  # 0700: the database, keys and broker passwords live here
        self.store = open_store(config.store.path, config.store.url, config.store.max_page_count)
        self.owner = Owner(config.owner_key)
        self.terms = TermsDesk(self)  # first-party terms: proffers, answers, and the outbox's gate
        # releases on offer and their transfers to devices (fp.ota)
        self.updates = UpdateDesk(config.data_dir, self.owner, self._publish_command, self.audit)
        self.ingest = Ingest(
            self.store, config.auto_accept, config.log_rejections_per_minute, bool(config.broker.shared_group)
        )
        # signed receipts of what was committed, for devices whose destination asks for them
        self.receipts = ReceiptBook(config.data_dir / RECEIPT_KEY_FILE) if config.receipts else None
        self.receipts_taken: asyncio.Queue[list[Taken]] = asyncio.Queue()  # to sign, oldest first
        self.ingest_problem: str | None = None  # why ingest cannot commit (disk-full, ...), None while it can
        # the readings' live listeners (the API's /stream)
        self.live: set[asyncio.Queue[dict[str, Any]]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.ready = threading.Event()
        self.bus: Bus | None = None
        self.relays: list[Bus] = []
        self.broker: EmbeddedBroker | None = None
        self.outbox: Outbox | None = None
        self.commander: Commander | None = None
        self.api_port: int | None = None
        self.started_s = time.time()
        self._tasks: list[asyncio.Task[Any]] = []  # the loops _start began; _shut_down cancels them
        self._server: Any = None  # uvicorn.Server while the API runs
        self._server_task: asyncio.Task[Any] | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self) -> None:
        """Run until request_stop() (or Ctrl-C); the process's GC thresholds are the agent's meanwhile."""
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            asyncio.run(self.run_async())
        except KeyboardInterrupt:
            pass
        finally:
            gc.set_threshold(*thresholds)

    def request_stop(self) -> None:
        if self.loop and self.stopping:
            self.loop.call_soon_threadsafe(self.stopping.set)

    async def run_async(self) -> None:
        """Start every stage, run until request_stop(), then shut them down in reverse order."""
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        try:
            await self._start()
            await self.stopping.wait()
        finally:
            await self._shut_down()

    async def _start(self) -> None:
        """Broker and connections, outbox, commands, the loops, then the API; `ready` when all run."""
        config = self.config
        host, port, username, password = await self._start_broker()
        inbox = Inbox()
        self.bus = Bus(
            host,
            port,
            config.broker.client_id,
            inbox,
            config.broker.shared_group,
            username,
            password,
            terms_mqtt.PREFIX,
            terms_mqtt.recipient_filters(),  # proffers to this agent over its own broker
        )
        self.relays = []
        for index, relay in enumerate(config.broker.relay_brokers):
            relay_host, _, relay_port = relay.rpartition(":")
            relay_bus = Bus(
                relay_host,
                int(relay_port),
                f"{config.broker.client_id}-relay{index}",
                inbox,
                None,
                config.broker.relay_username,
                config.broker.relay_password,
                terms_mqtt.PREFIX,
                terms_mqtt.owner_filters(self.owner.owner_id),  # answers to this owner's proffers
            )
            self.relays.append(relay_bus)
        relays = {
            terms_mqtt.SCHEME + relay: bus
            for relay, bus in zip(config.broker.relay_brokers, self.relays, strict=True)
        }
        self.terms.courier = terms_mqtt.TermsCourier(self.terms, self.bus, relays)
        for bus in [self.bus, *self.relays]:
            bus.on_side_message = self.terms.courier.on_message
            bus.start()
        self.terms.courier.publish_policy()
        self.outbox = Outbox(
            self.store, config.outbox_backoff_max_s, self._routes_expired, bool(config.broker.shared_group)
        )
        self.outbox.gate = self.terms.gate
        self.commander = Commander(self.owner, self._publish_command, self.audit, config.command_timeout_s)
        self._tasks.append(asyncio.create_task(self._ingest_forever(inbox)))
        self._tasks.append(asyncio.create_task(self.outbox.run()))
        self._tasks.append(asyncio.create_task(self._retention_forever()))
        if self.receipts:
            self._tasks.append(asyncio.create_task(self._receipts_forever()))
        if config.api.enabled:
            await self._start_api()
        self.ready.set()
        devices_reach = (
            f"{self.broker.host}:{self.broker.port} (embedded)" if self.broker else f"{host}:{port}"
        )
        log.info("agent %s role, owner %s, broker %s", config.role, self.owner.owner_id, devices_reach)

    async def _start_broker(self) -> tuple[str, int, str | None, str | None]:
        """Start the embedded broker if configured; return where and as whom the agent connects."""
        broker = self.config.broker
        if not broker.embedded:
            return broker.host, broker.port, broker.username, broker.password
        self.broker = EmbeddedBroker(self.config.data_dir / "broker", broker.host, broker.port)
        await asyncio.to_thread(self.broker.start)
        assert self.stopping is not None
        self._tasks.append(asyncio.create_task(self.broker.supervise(self.stopping)))
        self._tasks.append(asyncio.create_task(self._relay_claims_forever()))
        # the agent's own listener, on loopback whatever address devices use (broker.port)
        username, password = self.broker.agent_credentials()
        return "127.0.0.1", self.broker.agent_port, username, password

    async def _start_api(self) -> None:
        """Serve the API and the console (uvicorn on this loop); return once it listens."""
        import uvicorn

        from host_agent.webapp import build_webapp

        config = self.config
        uv_config = uvicorn.Config(
            build_webapp(self),
            host=config.api.host,
            port=config.api.port,
            log_level="warning",
            lifespan="off",
        )
        server = self._server = uvicorn.Server(uv_config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._server_task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
            if self._server_task.done():
                self._server_task.result()
        sockets = [s for srv in server.servers for s in srv.sockets]
        self.api_port = sockets[0].getsockname()[1] if sockets else config.api.port

    async def _shut_down(self) -> None:
        """Stop what _start started, whatever it got to: the API lets its requests end, the rest is cancelled."""
        if self._server:
            self._server.should_exit = True
        for task in self._tasks:
            task.cancel()
        tasks = [*self._tasks, *([self._server_task] if self._server_task else [])]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self._server, self._server_task = [], None, None
        for bus in [bus for bus in [self.bus, *self.relays] if bus is not None]:
            await bus.stop()
        if self.outbox:
            await self.outbox.close()
        await self.terms.close()
        await self.updates.close()
        if self.broker:
            await asyncio.to_thread(self.broker.stop)
        await asyncio.to_thread(self.store.close)

    # --- ingest --------------------------------------------------------------------------------

    async def _check_forever(
        self, inbox: Inbox, checked: asyncio.Queue[tuple[list[Delivery], Checked]]
    ) -> None:
        """Ingest's first stage: parse and verify the next batch while the last one commits."""
        while True:
            batch = await inbox.take(MAX_BATCH)
            ready = await asyncio.to_thread(self.ingest.check, [(d.topic, d.payload) for d in batch])
            await checked.put((batch, ready))

    async def _ingest_forever(self, inbox: Inbox) -> None:
        """Ingest's second stage: commit each checked batch, then acknowledge it to its broker.

        Two stages in two threads: signatures (PyNaCl) and the store's round trips release the GIL,
        so one agent checks a batch on one core while the store commits the last (docs/benchmarks.md).
        """
        checked: asyncio.Queue[tuple[list[Delivery], Checked]] = asyncio.Queue(maxsize=1)
        checker = asyncio.create_task(self._check_forever(inbox, checked))
        try:
            await self._commit_forever(checked)
        finally:
            checker.cancel()

    async def _commit_forever(self, checked: asyncio.Queue[tuple[list[Delivery], Checked]]) -> None:
        while True:
            batch, ready = await checked.get()
            pause_s = 0.1
            while True:
                try:
                    outcomes = await asyncio.to_thread(self.ingest.commit, ready)
                    break
                except (*self.store.errors, OSError) as error:
                    # Disk full or locked: acknowledge nothing, keep the batch, try again. The broker
                    # stops sending once its in-flight window is full, so nothing is lost.
                    if self.ingest_problem is None:
                        log.error("store cannot commit (%s): not acknowledging until it can", error)
                    self.ingest_problem = write_problem(error)
                    await asyncio.sleep(pause_s)
                    pause_s = min(2.0, pause_s * 2)
            if self.ingest_problem is not None:
                log.warning("store commits again")
                self.ingest_problem = None
            by_source: dict[Bus, list[Delivery]] = {}
            for delivery in batch:
                by_source.setdefault(delivery.source, []).append(delivery)
            for bus, deliveries in by_source.items():
                await bus.ack(deliveries)
            self._after_commit(outcomes)

    def _publish_command(self, topic: str, payload: bytes) -> None:
        """Send a command wherever the device may listen: our broker and every relay (the vendor's)."""
        assert self.bus
        for bus in [self.bus, *self.relays]:
            bus.publish(topic, payload)

    def _after_commit(self, outcomes: list[Outcome]) -> None:
        has_readings = False
        receipts = self.receipts
        if receipts:
            now_s = time.monotonic()
            due: list[str] = []
            for outcome in outcomes:
                device_id, boot, seq = outcome.device_id, outcome.boot, outcome.seq
                if (
                    outcome.kind in RECEIPT_KINDS
                    and device_id is not None
                    and boot is not None
                    and seq is not None
                    and (outcome.reason is None or outcome.reason == "duplicate")
                    and receipts.committed(device_id, boot, seq, now_s)
                ):
                    due.append(device_id)
            if due:
                self.receipts_taken.put_nowait(receipts.take(now_s, due))
        for outcome in outcomes:
            if outcome.reason is not None:  # counted by ingest, stored with its reason
                continue
            if outcome.kind == "ack" and self.commander:
                self.commander.resolve(outcome.body)
            if outcome.kind == "status" and outcome.device_id is not None:
                self.updates.on_status(outcome.device_id, outcome.body)
            if outcome.kind == "reading":
                has_readings = True
                if not self.live:
                    continue
                event = {
                    "id": outcome.message_id,
                    "device_id": outcome.device_id,
                    "boot": outcome.boot,
                    "seq": outcome.seq,
                    "values": [{"n": n, "u": u, "v": v} for n, u, v in outcome.body],
                    "message_hex": outcome.raw.hex(),
                }
                for listener in list(self.live):
                    if listener.qsize() < LIVE_QUEUE:  # a slow listener misses events, never blocks ingest
                        listener.put_nowait(event)
        if has_readings and self.outbox:
            self.outbox.wake.set()

    def _send_receipts(self, receipts: list[tuple[str, bytes]]) -> None:
        """Receipts go to the agent's own broker, where the devices that trust its key listen."""
        if self.bus:
            self.bus.publish_now(receipts)

    async def _receipts_forever(self) -> None:
        """Sign and send the receipts commits made due, and those that waited RECEIPT_INTERVAL_S for
        more counters. The signatures are made in a thread of their own: thousands a second at a
        fleet's rate, they would otherwise hold the event loop (docs/benchmarks.md), and in the
        store's threads they would wait behind its round trips while devices' queues fill. One batch
        at a time, in the order their counters were taken: a device refuses a counter lower than
        its last."""
        receipts = self.receipts
        assert receipts
        loop = asyncio.get_running_loop()
        signer = ThreadPoolExecutor(1, thread_name_prefix="fp-receipts")
        try:
            while True:
                try:
                    taken = await asyncio.wait_for(self.receipts_taken.get(), RECEIPT_TICK_S)
                except TimeoutError:
                    taken = []
                while not self.receipts_taken.empty():
                    taken += self.receipts_taken.get_nowait()
                taken += receipts.take(time.monotonic())
                if taken:
                    self._send_receipts(await loop.run_in_executor(signer, receipts.sign, taken))
        finally:
            signer.shutdown(wait=False, cancel_futures=True)

    async def _retention_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.store.apply_retention, self.config.store.retention_days)
            except self.store.errors as error:
                log.warning("retention pass failed: %s", error)
            await asyncio.sleep(3600)

    # --- owner actions (API and CLI use these) -------------------------------------------------

    async def audit(self, kind: str, data: dict[str, Any]) -> None:
        await asyncio.to_thread(self.store.audit, kind, data)

    async def register_card(self, data: bytes) -> RegisteredOut:
        """Register a device this owner claimed at flash time, from its card, as accepted.

        The card must verify (self-signature, key matches id) and name this agent's owner: the
        physical access that provisioned the owner key is the proof, so no pending step is needed.
        """
        try:
            card = wire.parse_card(data)
        except ProtocolError as error:
            raise UserError(f"not a valid device card: {error}") from None
        if card.owner_id != self.owner.owner_id:
            raise UserError(
                f"the card of {card.device_id} names owner {card.owner_id}, not this agent's "
                f"{self.owner.owner_id}: flash it with this agent's key (--config)"
            )
        outcomes = await asyncio.to_thread(
            self.ingest.process, [(topics.topic(card.device_id, "card"), bytes(data))]
        )
        if outcomes[0].reason is not None:
            raise UserError(f"the card was refused: {outcomes[0].reason} ({outcomes[0].detail})")
        await self.set_device_state(card.device_id, "accepted")
        return RegisteredOut(device_id=card.device_id, state="accepted", board=card.board)

    def devices_endpoint(self) -> tuple[str, int]:
        """The (host, port) devices dial to reach this agent's broker: the key of their password for it."""
        home = self.home_destination("")
        return home["host"], home["port"]

    async def enrol(self, card_data: bytes, password: str) -> EnrolledOut:
        """Let the device of this card connect to the embedded broker with `password` (its hash is kept)."""
        if self.broker is None:
            raise UserError(
                "the broker is not embedded (broker.embedded = false): give the device an account on your broker"
            )
        try:
            card = wire.parse_card(card_data)
        except ProtocolError as error:
            raise UserError(f"not a valid device card: {error}") from None
        await asyncio.to_thread(self.broker.add_device, card.device_id, password)
        host, port = self.devices_endpoint()
        await self.audit("device-enrolled", {"device": card.device_id, "broker": f"{host}:{port}"})
        return EnrolledOut(device_id=card.device_id, broker=f"{host}:{port}")

    async def enrol_from_device(self, device_url: str) -> EnrolledOut:
        """Enrol a device from its LAN API while its claim window is open (the owner pressed its button).

        The password travels the owner's LAN once, never the vendor's broker; the card, signed by
        the device, names whose password it is.
        """
        import httpx

        host, port = self.devices_endpoint()
        base = device_url.rstrip("/")
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                card = await client.get(base + "/card")
                answer = await client.get(f"{base}/broker-password/{host}:{port}")
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise UserError(
                f"cannot reach the device at {device_url}: {type(error).__name__} {error}"
            ) from None
        if answer.status_code == 403:
            raise UserError("the device's claim window is closed: press its button, then enrol it again")
        if card.status_code != 200 or answer.status_code != 200:
            raise UserError(
                f"the device at {device_url} answered {card.status_code}/{answer.status_code}: is it a Firstparty device?"
            )
        password = answer.text.strip()
        if len(password) != 32 or any(c not in "0123456789abcdef" for c in password):
            raise UserError(f"the device at {device_url} gave no usable password")
        return await self.enrol(card.content, password)

    async def add_relay(self, name: str, owner_id: str) -> RelayOut:
        """A relay account on the devices' listener (vendor role): an owner's agent's way to its devices."""
        if self.broker is None:
            raise UserError("relay accounts live on the embedded broker (broker.embedded = true)")
        username, password = await asyncio.to_thread(self.broker.add_relay, name, owner_id)
        await self._update_relay_claims()
        await self.audit("relay-added", {"username": username, "owner": owner_id})
        return RelayOut(username=username, password=password, owner_id=owner_id)

    async def _update_relay_claims(self) -> None:
        """Give each relay the readings of the devices whose card names its owner (and no others)."""
        if self.broker is None or not self.broker.relays():
            return
        claims: dict[str, list[str]] = {}
        for device in await asyncio.to_thread(self.store.devices):
            if device.owner_id and device.state != "rejected":
                claims.setdefault(device.owner_id, []).append(device.device_id)
        await asyncio.to_thread(self.broker.set_claims, claims)

    async def _relay_claims_forever(self) -> None:
        while True:
            try:
                await self._update_relay_claims()
            except self.store.errors as error:
                log.warning("relay accounts not updated: %s", error)
            await asyncio.sleep(RELAY_CLAIMS_S)

    async def remove_relay(self, name: str) -> RelayRemovedOut:
        from host_agent.bus.broker import RELAY_PREFIX

        if self.broker is None or not await asyncio.to_thread(
            self.broker.remove_account, RELAY_PREFIX + name
        ):
            raise UserError(f"no relay account {name!r}")
        await self.audit("relay-removed", {"username": RELAY_PREFIX + name})
        return RelayRemovedOut(username=RELAY_PREFIX + name, removed=True)

    async def set_device_state(self, device_id: str, state: str) -> None:
        changed = await asyncio.to_thread(self.store.set_state, device_id, state)
        if not changed:
            raise UserError(f"no device {device_id}: see `firstparty devices list`")
        if state == "rejected" and self.broker is not None:
            # its password stops working at once: the broker refuses it, not only ingest
            await asyncio.to_thread(self.broker.remove_account, device_id)
        self.ingest.device_state_changed(device_id, state)
        if state == "accepted":
            await asyncio.to_thread(self.ingest.release_held, device_id)
            if self.outbox:
                self.outbox.wake.set()
        await self.audit("device-" + state, {"device": device_id})
        if state == "accepted":
            self.terms.claimed(device_id)

    async def command(
        self, device_id: str, op: str, args: dict[str, Any], timeout_s: float | None = None
    ) -> CommandResult:
        assert self.commander
        return await self.commander.send(device_id, op, args, timeout_s)

    def home_destination(self, device_id: str) -> dict[str, Any]:
        """The owner's broker as a device reaches it (the embedded one wants the id as username)."""
        broker = self.config.broker
        port = self.broker.port if self.broker else broker.port
        home: dict[str, Any] = {"host": broker.advertise_host or broker.host, "port": port}
        if self.broker:
            home["user"] = device_id
        if self.receipts:  # the device keeps each reading until this agent's receipt covers it
            home["receipts"] = self.receipts.public.hex()
        return home

    async def add_route(self, name: str, spec: dict[str, Any]) -> RouteChange:
        routing.validate_name(name)
        spec = routing.validate(spec, self.config.files_dir)
        grant = grants.encode_grant(self.owner.sign, self.owner.public, name, spec, int(time.time()))
        try:
            await asyncio.to_thread(self.store.add_route, name, spec, grant)
        except self.store.integrity_errors:
            raise UserError(f"a route named {name!r} exists: remove it first or pick another name") from None
        self.ingest.reload_routes()
        commands = None
        if spec["mode"] == "instead-of":
            commands = await self._apply_device_destinations(spec["devices"])
        return RouteChange(name, grant.hex(), spec["needs_agreement"], commands)

    async def change_route(self, name: str, spec: dict[str, Any]) -> RouteChange:
        """Replace a route in one step: validated first, re-signed, audited, devices told.

        A spec that does not validate leaves the route as it was. Forwards not yet delivered stay
        queued for the new destination when the new spec still carries them. When the route is
        instead-of before or after, its devices (of both specs) get the destinations implied now.
        """
        spec = routing.validate(spec, self.config.files_dir)
        before = {r.name: r for r in await asyncio.to_thread(self.store.routes)}
        if name not in before:
            raise UserError(f"no route {name!r}: see `firstparty routes list`")
        grant = grants.encode_grant(self.owner.sign, self.owner.public, name, spec, int(time.time()))
        after = routing.Route.of(name, spec)

        def keeps(device_id: str, metric_names: list[str]) -> bool:
            return routing.matches(after, device_id, metric_names, time.time())

        if not await asyncio.to_thread(self.store.update_route, name, spec, grant, keeps):
            raise UserError(f"no route {name!r}: see `firstparty routes list`")  # removed meanwhile
        self.ingest.reload_routes()
        affected = [d for r in (before[name], after) if r.mode == "instead-of" for d in r.devices]
        commands = await self._apply_device_destinations(list(dict.fromkeys(affected))) if affected else None
        return RouteChange(name, grant.hex(), device_commands=commands)

    async def remove_route(self, name: str) -> RouteChange:
        before = {r.name: r for r in await asyncio.to_thread(self.store.routes)}
        if not await asyncio.to_thread(self.store.remove_route, name):
            raise UserError(f"no route {name!r}: see `firstparty routes list`")
        self.ingest.reload_routes()
        route = before[name]
        if route.mode == "instead-of":
            return RouteChange(name, device_commands=await self._apply_device_destinations(route.devices))
        return RouteChange(name)

    async def _routes_expired(self, expired: list[routing.Route]) -> None:
        self.ingest.reload_routes()
        for route in expired:
            if route.mode == "instead-of":
                await self._apply_device_destinations(route.devices)

    async def _apply_device_destinations(self, devices: list[str]) -> list[CommandResult]:
        """Send each affected device the destinations the routes imply (instead-of drops the vendor)."""
        if "*" in devices:
            devices = [d.device_id for d in await asyncio.to_thread(self.store.devices)]
        routes = await asyncio.to_thread(self.store.routes)
        results: list[CommandResult] = []
        for device_id in devices:
            destinations = routing.device_destinations(routes, device_id, self.home_destination(device_id))
            if await asyncio.to_thread(self.terms.is_vendor_dropped, device_id):  # it declined our terms
                destinations = [d for d in destinations if d["name"] != "vendor"]
            outcome = await self.command(device_id, "set-destinations", {"destinations": destinations})
            results.append(outcome)
        return results

    def store_health(self) -> str:
        """ok, or why the store cannot write (disk-full, cannot-commit), as ingest or the outbox found."""
        if self.ingest_problem is not None:
            return self.ingest_problem
        if self.outbox and self.outbox.store_problem:
            return self.outbox.store_problem
        return "ok"

    def rejection_counts(self) -> dict[str, int]:
        """Messages refused since start, by reason: every reason of the closed set, zeros too."""
        return dict(self.ingest.rejected_counts)

    def status(self) -> StatusOut:
        """A snapshot for /healthz, `firstparty status` and the metrics."""
        return StatusOut(
            role=self.config.role,
            owner_id=self.owner.owner_id,
            store=self.store_health(),
            broker="connected" if self.bus and self.bus.is_connected else "disconnected",
            broker_restarts=self.broker.restarts if self.broker else 0,
            broker_endpoint=":".join(map(str, self.devices_endpoint())) if self.broker else None,
            accepted=dict(self.ingest.counts),
            rejected={k: v for k, v in self.ingest.rejected_counts.items() if v},
            outbox_delivered=self.outbox.delivered if self.outbox else 0,
            outbox_failed_attempts=self.outbox.failed if self.outbox else 0,
            uptime_s=round(time.time() - self.started_s, 1),
        )


def start_in_thread(config: Config, timeout_s: float = 30.0) -> tuple[Agent, threading.Thread]:
    """Start an agent on a background thread and wait until it serves (tests, demo)."""
    agent = Agent(config)
    thread = threading.Thread(target=agent.run, name="firstparty-agent", daemon=True)
    thread.start()
    if not agent.ready.wait(timeout_s):
        raise RuntimeError(f"agent did not start within {timeout_s:g} s")
    return agent, thread
