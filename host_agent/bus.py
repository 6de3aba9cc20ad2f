"""The agent's connection to its broker: paho-mqtt with manual acknowledgements.

A QoS 1 message is acknowledged (PUBACK) only when the caller says so, after the store has
committed it; the session is persistent (clean_session false), so whatever was not acknowledged
when the agent died is delivered again when it comes back. paho runs its network loop in its own
thread; messages cross into the event loop in bursts: paho's thread appends to a deque and wakes
the loop once per burst (`call_soon_threadsafe` writes to a pipe and hands over the GIL, which
cost more than the rest of receiving a message when done once per message).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fp import topics
from host_agent.tcp import no_nagle

log = logging.getLogger("firstparty.bus")
INGEST_KINDS = ("card", "reading", "status", "ack")


@dataclass
class Delivery:
    topic: str
    payload: bytes
    mid: int
    qos: int
    source: Bus | None = None  # the connection that must acknowledge it


class Bus:
    """Subscribe to every device's messages; publish commands; ack on request."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        queue: asyncio.Queue[Delivery],
        loop: asyncio.AbstractEventLoop,
        shared_group: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ):
        self.host, self.port = host, port
        self.queue = queue
        self.loop = loop
        self.shared_group = shared_group
        self.is_connected = False
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0.1, 2)  # type: ignore[arg-type]  # paho takes seconds as floats; its hint says int
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_socket_open = no_nagle
        self.arrived: deque[Delivery] = deque()
        self.is_wake_pending = False

    def filters(self) -> list[str]:
        prefix = f"$share/{self.shared_group}/" if self.shared_group else ""
        return [prefix + topics.wildcard(kind) for kind in INGEST_KINDS]

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        self.is_connected = True
        client.subscribe([(f, 1) for f in self.filters()])
        log.info("connected to %s:%d", self.host, self.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self.is_connected = False
        log.info("disconnected from the broker: %s", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage):
        self.arrived.append(Delivery(message.topic, bytes(message.payload), message.mid, message.qos, self))
        if not self.is_wake_pending:
            self.is_wake_pending = True
            self.loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        """On the event loop: move what paho received into the queue."""
        # cleared before draining: a message appended after this line schedules another hand-over
        self.is_wake_pending = False
        arrived, put = self.arrived, self.queue.put_nowait
        while arrived:
            put(arrived.popleft())

    def ack(self, delivery: Delivery) -> None:
        if delivery.qos > 0:
            self.client.ack(delivery.mid, delivery.qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)
