"""QoS 2 for fp.mqtt's client: a QoS 2 PUBLISH received, and the PUBREC and PUBCOMP of one sent.

A board publishes and subscribes at QoS 1, and a broker sends a subscription no QoS above the one
it granted, so a board's client loads this module only when a broker sends a QoS 2 flow anyway
(or a client publishes at QoS 2: the host's, the tests'). fp.mqtt imports it at the first such
packet; what the client holds for it (`_window`'s PUBRELs, `_qos2_ids`) is the client's. Runs
under MicroPython and CPython, as fp.mqtt (tests/firmware/test_mqtt_conformance.py).
"""

from fp import const
from fp.mqtt import MQTTError, ticks_ms

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from fp.mqtt import Message, MQTTClient, _Outgoing

_PUBLISH_QOS2 = const(0x04)  # the QoS 2 bit of a PUBLISH's first byte
_PUBACK = const(0x40)  # fp.mqtt's too: a const() has no global to import
_PUBREC = const(0x50)
_PUBREL = const(0x62)  # with its fixed flags 0010 (MQTT-3.6.1-1)
_PUBCOMP = const(0x70)
_MAX_PENDING = const(16)  # QoS 2 ids received and not yet released: more is a misbehaving broker


def received(client: "MQTTClient", packet_id: bytes) -> bool:
    """Record a QoS 2 id received; True when it is new (deliver), False for a resend (do not)."""
    if packet_id in client._qos2_ids:
        return False
    if len(client._qos2_ids) >= _MAX_PENDING:
        raise MQTTError("protocol", "more than %d QoS 2 messages unreleased" % _MAX_PENDING)
    client._qos2_ids.add(bytes(packet_id))
    return True


async def _incoming(client: "MQTTClient", message: "Message | None", packet_id: bytes) -> None:
    """A QoS 2 PUBLISH: delivered once however often it comes until its PUBREL, and a PUBREC for
    each (MQTT-4.3.3-2); `message` None for one read past for its size (counted, not delivered)."""
    if received(client, packet_id) and message is not None:
        await client._deliver(message)
    await client._send(bytes((_PUBREC, 2)) + packet_id)


async def _acknowledged(
    client: "MQTTClient", kind: int, packet_id: int, index: int, entry: "_Outgoing | None"
) -> bool:
    """A PUBACK, PUBREC or PUBCOMP that is not a QoS 1 publish's PUBACK, for `entry` (`index` in the
    window; None: for no publish of ours): send the PUBREL a PUBREC asks for, or refuse; True for
    the PUBCOMP that ends the publish (the client releases it)."""
    if entry is None:
        raise MQTTError("protocol", "0x%02x for no QoS 2 publish of ours (id %d)" % (kind, packet_id))
    window = client._window
    first = entry.packet[0]
    if kind == _PUBREC and first == _PUBREL:
        # a PUBREC again (mosquitto sent two for one resent PUBLISH: its issue 918): the
        # PUBREL again, which the broker answers once more (MQTT-4.3.3-2)
        await client._send(entry.packet)
        return False
    expected = _PUBCOMP if first == _PUBREL else _PUBREC if first & _PUBLISH_QOS2 else _PUBACK
    if kind != expected:  # a PUBCOMP before the PUBREC, a PUBACK for QoS 2, a PUBREC for QoS 1
        raise MQTTError("protocol", "0x%02x where 0x%02x was due (id %d)" % (kind, expected, packet_id))
    if kind == _PUBREC:
        # the PUBRELs lead the window, in the order their PUBRECs came (MQTT-4.6.0-4), so that
        # a reconnect resends them so, ahead of the PUBLISHes
        released = 0
        while window[released].packet[0] == _PUBREL:
            released += 1
        # The PUBLISH is the broker's now: it is never sent again (MQTT-4.3.3-1), and its bytes go
        entry.packet = bytearray((_PUBREL, 2, packet_id >> 8, packet_id & 0xFF))
        del window[index]
        window.insert(released, entry)
        entry.sent_ms = ticks_ms()  # pyright: ignore[reportAttributeAccessIssue] (the stubs' ticks type)
        await client._send(entry.packet)  # a failed write: the PUBREL goes on the next connection
        return False
    return True
