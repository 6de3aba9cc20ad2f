"""A PUBLISH beyond fp.mqtt's `max_packet_bytes`, read past without holding it, and acknowledged.

A broker sends a board none (its own messages are far below the limit), so fp.mqtt's client loads
this module at the first one: counted in `oversized`, logged with its topic, handed to
`on_oversized` (topic, payload size) when set, and acknowledged (a broker would otherwise send it
again on every connection). Runs under MicroPython and CPython, as fp.mqtt
(tests/firmware/test_mqtt_client.py).
"""

import struct

from fp import const
from fp.mqtt import MQTTError

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from fp.mqtt import MQTTClient

_PUBACK_2 = const(b"\x40\x02")  # PUBACK, remaining length 2; the packet id follows


async def take(client: "MQTTClient", count: int) -> bytes:
    """`count` bytes: what the client's buffer holds first, then straight from the stream."""
    held = client._buffer[client._position : client._position + count]
    client._position += len(held)
    if len(held) < count:
        held += await client._link().readexactly(count - len(held))
    return held


async def _skip_publish(client: "MQTTClient", header: int, length: int) -> None:
    """Read past a PUBLISH of `length` bytes (its topic and id kept) and acknowledge it."""
    qos = (header >> 1) & 3
    if qos == 3:
        raise MQTTError("protocol", "PUBLISH with QoS 3")
    topic_length = struct.unpack(">H", await take(client, 2))[0]
    fixed = 2 + topic_length + (2 if qos else 0)
    if fixed > length:
        raise MQTTError("protocol", "PUBLISH topic longer than the packet")
    rest = await take(client, fixed - 2)
    left = length - fixed
    while left:
        left -= len(await take(client, min(left, 4096)))
    client.oversized += 1
    client.log(
        "mqtt %s: skipped a PUBLISH of %d bytes (limit %d) on %s"
        % (client.broker.key(), length, client.max_packet_bytes, repr(bytes(rest[: min(topic_length, 200)])))
    )
    on_oversized = getattr(client, "on_oversized", None)  # set by the agent's connection, if at all
    if on_oversized:
        on_oversized(bytes(rest[:topic_length]), length - fixed)  # the payload's size
    packet_id = rest[topic_length : topic_length + 2]
    if qos == 1:
        await client._send(_PUBACK_2 + packet_id)
    elif qos == 2:
        from fp import mqtt_qos2

        await mqtt_qos2._incoming(client, None, packet_id)
