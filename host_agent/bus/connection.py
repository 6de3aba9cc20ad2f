"""The agent's connection to a broker: device messages in, acknowledged after commit; commands out.

It runs the firmware's own asyncio MQTT 3.1.1 client (fp.mqtt, tested under MicroPython and
CPython) on the agent's event loop, with manual acknowledgements (host_agent.bus.ackclient, a subclass
of it): a QoS 1 message is acknowledged (PUBACK) only when `ack()` is called, after the store has committed it. The session is persistent
(clean session off), so whatever was not acknowledged when the agent died is delivered again when
it comes back. Why not paho-mqtt here: receiving a message and acknowledging it costs paho about
29 us of CPU (a recv() per header byte, a select() per packet, a socketpair write per ack), this
client 2-3 us (packets parsed out of 64 KiB reads), and the agent's whole budget per reading is a
few tens of microseconds beyond the signature check (docs/benchmarks.md, "Host agent"). paho
remains the client for the destinations the outbox forwards to (on this same loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fp import mqtt, topic_parse
from host_agent.bus.ackclient import AckableMessage, ManualAckClient

log = logging.getLogger("firstparty.bus")
INGEST_KINDS = ("card", "reading", "status", "ack")
# larger than any protocol message (fp.messages.MAX_BYTES), which ingest refuses as 'oversized';
# a PUBLISH beyond this is read past and acknowledged (fp.mqtt), never held in memory, and reaches
# ingest as its size alone: refused as 'oversized' like any other
MAX_PACKET_BYTES = 256 * 1024
KEEPALIVE_S = 30
# one read takes what the broker has sent, up to this: hundreds of readings parsed per read
READ_CHUNK = 64 * 1024
MAX_BACKOFF_S = 2.0
COMMAND_WAIT_S = 10.0  # how long a command waits for a connection that is down
COMMAND_WINDOW = 32  # commands unacknowledged at once
COMMAND_QUEUE = 4096  # commands waiting behind them; beyond that one is refused and logged


@dataclass(slots=True)
class Delivery:
    topic: str
    payload: bytes | int  # an int: the size of a message too large to hold (read past)
    token: Any  # what ack() takes (None: QoS 0, nothing to acknowledge)
    source: Bus


class Inbox:
    """Deliveries from every Bus of the agent, in arrival order, for the ingest loop."""

    def __init__(self) -> None:
        self.items: deque[Delivery] = deque()
        self.arrived = asyncio.Event()

    def put(self, delivery: Delivery) -> None:
        self.items.append(delivery)
        self.arrived.set()

    async def take(self, limit: int) -> list[Delivery]:
        """Wait for at least one delivery; return up to `limit`, oldest first."""
        while not self.items:
            self.arrived.clear()
            await self.arrived.wait()
        items = self.items
        return [items.popleft() for _ in range(min(limit, len(items)))]


class Bus:
    """Subscribe to every device's messages; publish commands; acknowledge on request."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        inbox: Inbox,
        shared_group: str | None = None,
        username: str | None = None,
        password: str | None = None,
        side_prefix: str = "",
        side_filters: list[str] | None = None,
    ):
        self.host, self.port = host, port
        self.inbox = inbox
        self.shared_group = shared_group
        # topics under `side_prefix` are not device messages (first-party terms:
        # host_agent.terms.mqtt): handed to `on_side_message`, acknowledged once it returns
        self.side_prefix, self.side_filters = side_prefix, side_filters or []
        self.on_side_message: Callable[[Bus, str, bytes], Awaitable[None]] | None = None
        self.client = ManualAckClient(
            mqtt.Broker(host, port, username, password),
            client_id,
            on_message=self._on_message,
            keepalive_s=KEEPALIVE_S,
            clean=False,
            subscriptions=[(topic_filter, 1) for topic_filter in self.filters()],
            max_packet_bytes=MAX_PACKET_BYTES,
            max_backoff_s=MAX_BACKOFF_S,
            log=log.info,
            # commands to many devices at once (a route change) wait their turn, none is refused
            max_inflight=COMMAND_WINDOW,
            max_queued=COMMAND_QUEUE,
            read_chunk=READ_CHUNK,
        )
        self.client.on_oversized = self._on_oversized
        self.task: asyncio.Task[None] | None = None
        self.sending: set[asyncio.Task[None]] = set()

    @property
    def is_connected(self) -> bool:
        return self.client.is_up

    def filters(self) -> list[str]:
        prefix = f"$share/{self.shared_group}/" if self.shared_group else ""
        return [prefix + f for f in [topic_parse.wildcard(kind) for kind in INGEST_KINDS] + self.side_filters]

    def start(self) -> None:
        """Connect and keep connecting (on the running event loop)."""
        self.task = asyncio.create_task(self.client.run())

    async def stop(self) -> None:
        self.client.stop()
        for task in [self.task, *self.sending]:
            if task:
                task.cancel()
        await asyncio.gather(*(t for t in [self.task, *self.sending] if t), return_exceptions=True)

    async def _on_message(self, message: AckableMessage) -> None:
        if self.side_prefix and self.on_side_message and message.topic.startswith(self.side_prefix):
            task = asyncio.create_task(self._side_message(message))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)
            return
        self.inbox.put(Delivery(message.topic, message.payload, message.token, self))

    async def _side_message(self, message: AckableMessage) -> None:
        assert self.on_side_message is not None
        try:
            await self.on_side_message(self, message.topic, bytes(message.payload))
        except Exception:  # noqa: BLE001 - one bad message never stops the bus; it is not acknowledged
            log.exception("message on %s not handled", message.topic)
            return
        if message.token is not None:
            await self.ack([Delivery(message.topic, b"", message.token, self)])

    def _on_oversized(self, topic: bytes, size: int) -> None:
        # already acknowledged by the client: nothing to acknowledge after the commit (token None)
        self.inbox.put(Delivery(topic.decode("utf-8", "replace"), size, None, self))

    async def ack(self, deliveries: list[Delivery]) -> None:
        """PUBACK these deliveries (all of this Bus), in one write."""
        tokens = [d.token for d in deliveries if d.token is not None]
        if tokens:
            try:
                await self.client.ack(tokens)
            except (OSError, mqtt.MQTTError) as error:  # the broker sends them again
                log.info("acknowledgements to %s:%d lost: %s", self.host, self.port, error)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Send a command with QoS 1, once connected (waiting up to COMMAND_WAIT_S for that)."""
        task = asyncio.create_task(self._publish(topic, payload, retain))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    def publish_now(self, messages: list[tuple[str, bytes]]) -> None:
        """Send these with QoS 0 if connected, in one task; if not, drop them (receipts: the device
        sends again what no receipt covers, after it reconnects or 2 s without one)."""
        if not self.client.is_up or not messages:
            return
        task = asyncio.create_task(self._publish_now(messages))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _publish_now(self, messages: list[tuple[str, bytes]]) -> None:
        try:
            for topic, payload in messages:
                await self.client.publish(topic, payload, qos=0)
        except (OSError, mqtt.MQTTError) as error:
            log.info("receipts to %s:%d not sent: %s", self.host, self.port, error)

    async def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        try:
            await self.client.wait_up(COMMAND_WAIT_S)
            await self.client.publish(topic, payload, qos=1, retain=retain)
        except (TimeoutError, OSError, mqtt.MQTTError) as error:
            log.warning("could not send %s to %s:%d: %s", topic, self.host, self.port, error)
