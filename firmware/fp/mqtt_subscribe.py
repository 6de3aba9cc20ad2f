"""Subscribing and unsubscribing while connected, and waiting for the link: fp.mqtt's client as
the host and the tests use it.

A board subscribes once, in its client's constructor (`subscriptions`, sent again on every
connect), never changes them and never waits for its link (its on_up announces it), so
`subscribe()`, `unsubscribe()`, the requests they wait on, the UNSUBSCRIBE packet and `wait_up()`
live here: a board never imports this module (about 1 KB less heap
from .mpy on 32 bits, docs/benchmarks.md). Reading the SUBACK and UNSUBACK stays fp.mqtt's (the
constructor's subscriptions are answered too). Runs under MicroPython and CPython, as fp.mqtt
(tests/firmware/test_mqtt_conformance.py).
"""

import asyncio
import struct

from fp import const, mqtt
from fp.mqtt import MQTTError, _remaining_length, _Request, _string, subscribe_packet

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any, Iterable

_UNSUBSCRIBE = const(0xA2)  # flags 0010 (MQTT-3.10.1-1)
_SUBACK_FAILURE = const(0x80)
_SUBACK = const(0x90)  # a request's kind: the acknowledgement it waits for (fp.mqtt._Request)
_UNSUBACK = const(0xB0)


def unsubscribe_packet(packet_id: int, topic_filters: "Iterable[str]") -> bytes:
    """Return the bytes of an UNSUBSCRIBE packet for [filter, ...]."""
    if not topic_filters:
        raise ValueError("UNSUBSCRIBE needs at least one filter")  # MQTT-3.10.3-2
    body = struct.pack(">H", packet_id)
    for topic_filter in topic_filters:
        subscribe_packet(1, [(topic_filter, 0)])  # the filter's checks (MQTT-4.7.1-2, MQTT-4.7.1-3)
        body += _string(topic_filter, "topic filter")
    return bytes((_UNSUBSCRIBE,)) + _remaining_length(len(body)) + body


class SubscribingClient(mqtt.MQTTClient):
    """An MQTTClient that also subscribes and unsubscribes while connected, and waits until up."""

    # made by a wait_up() that has to wait; set and let go on connect
    _up_event: "asyncio.Event | None" = None

    async def wait_up(self, timeout_s: float) -> None:
        """Wait until connected; raise asyncio.TimeoutError after `timeout_s`."""
        if self.is_up:
            return
        if self._up_event is None:
            self._up_event = asyncio.Event()
        await asyncio.wait_for(self._up_event.wait(), timeout_s)

    async def _connect(self) -> None:
        await super()._connect()
        if self._up_event is not None:
            self._up_event.set()  # wakes what waits in wait_up(); the next wait makes a new one
            self._up_event = None

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe (kept on every reconnect); return the granted QoS.

        Raise MQTTError "subscription-refused" on SUBACK 0x80, "down" if the link goes first."""
        subscribe_packet(1, [(topic_filter, qos)])
        granted = await self._request(_SUBACK, [(topic_filter, qos)])
        code = granted[0] if granted else _SUBACK_FAILURE
        self.granted[topic_filter] = code
        if code == _SUBACK_FAILURE:
            raise MQTTError("subscription-refused", topic_filter)
        if (topic_filter, qos) not in self.subscriptions:
            self.subscriptions.append((topic_filter, qos))
        return code

    async def unsubscribe(self, topic_filter: str) -> None:
        """Unsubscribe (and no longer subscribe on reconnect); return once UNSUBACK came."""
        subscribe_packet(1, [(topic_filter, 0)])  # the filter's checks
        self.subscriptions = [s for s in self.subscriptions if s[0] != topic_filter]
        self.granted.pop(topic_filter, None)
        await self._request(_UNSUBACK, [topic_filter])

    async def _request(self, kind: int, items: "list[Any]") -> "Any":
        if self._stopped:
            raise MQTTError("stopped")
        if not self.is_up:
            raise MQTTError("down", "not connected")
        packet_id = self._new_id()
        request = self._requests[packet_id] = _Request(kind, items)
        packet = (
            subscribe_packet(packet_id, items) if kind == _SUBACK else unsubscribe_packet(packet_id, items)
        )
        await self._send(packet)
        try:
            await asyncio.wait_for(request.done.wait(), self.ack_timeout_s)
        except asyncio.TimeoutError:
            self._requests.pop(packet_id, None)
            self.reconnect(
                "no %s within %.1f s" % ("SUBACK" if kind == _SUBACK else "UNSUBACK", self.ack_timeout_s)
            )
            raise MQTTError("timeout", "no acknowledgement of the request")
        if request.error:
            raise request.error
        return request.result
