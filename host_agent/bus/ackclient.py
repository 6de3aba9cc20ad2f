"""fp.mqtt's client with manual acknowledgements: the agent's ingest connection (host only).

A QoS 1 message comes to `on_message` with a `token`, and its PUBACK goes only when `ack(tokens)` is
called, after the store has committed the message: a crash in between makes the broker deliver it
again (the session is kept), never lose it. A token of an earlier connection is not acknowledged on
a later one (packet ids are per connection): the broker sends those messages again and the agent
recognises them as duplicates. The device acknowledges as it receives, so this lives here, not in
the firmware's client.
"""

from __future__ import annotations

from typing import Any

from fp import mqtt
from fp.mqtt_subscribe import SubscribingClient

PUBACK_2 = b"\x40\x02"  # PUBACK (0x40), remaining length 2; the packet id follows (MQTT-3.4)


class AckableMessage(mqtt.Message):
    """A received message and what `ManualAckClient.ack` takes for it (None: QoS 0, nothing to ack)."""

    __slots__ = ("token",)

    def __init__(self, message: mqtt.Message, token: tuple[int, bytes] | None):
        super().__init__(message.topic, message.payload, message.qos, message.retain, message.dup)
        self.token = token


class ManualAckClient(SubscribingClient):  # wait_up() is the subclass's: the host waits, a board does not
    """An MQTTClient whose QoS 1 PUBACKs wait for `ack()`."""

    async def _received(self, message: mqtt.Message, packet_id: Any) -> None:
        token = (self.connects, bytes(packet_id)) if packet_id is not None else None
        await self._deliver(AckableMessage(message, token))

    async def ack(self, tokens: list[tuple[int, bytes]]) -> int:
        """Acknowledge messages in one write; return how many PUBACKs were sent.

        Tokens of an earlier connection are left out: the broker delivers those messages again.
        """
        connects = self.connects
        packet_ids = [packet_id for connection, packet_id in tokens if connection == connects]
        if packet_ids and self.is_up:
            await self._send(PUBACK_2 + PUBACK_2.join(packet_ids))
            return len(packet_ids)
        return 0
