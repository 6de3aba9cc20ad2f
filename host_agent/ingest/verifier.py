"""Verify what devices publish: topic, format, signature against the device card, replay rule.

Pure core: values in, a verified message or a ProtocolError with its reason out. Used by the demo,
`firstparty verify` and anything that receives readings, so every recipient applies the same rules.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

from fp import cose, messages, replay, topics
from fp.errors import ProtocolError
from host_agent import wire

DEVICE_KINDS = ("reading", "status", "ack")
_RECENT = 4096  # digests kept to tell a harmless redelivery ("duplicate") from a replay


@dataclass
class DeviceState:
    card: messages.Card
    # one window per kind: a device publishes its status on every connection, ahead of the
    # readings of an earlier boot that its flash buffer still has to drain (docs/protocol.md 5)
    windows: dict[str, replay.ReplayWindow] = field(default_factory=dict)
    recent: OrderedDict[tuple[str, int, int], bytes] = field(default_factory=OrderedDict)


class Verifier:
    """Holds the cards and anti-replay state of the devices one recipient knows."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceState] = {}

    def learn_card(self, data: bytes, topic: str | None = None) -> messages.Card:
        """Check a device card (id binding, self-signature) and remember its key."""
        card = wire.parse_card(data)
        if topic is not None and topics.parse(topic) != (card.device_id, "card"):
            raise ProtocolError("wrong-topic", f"card of {card.device_id} on {topic}")
        state = self.devices.get(card.device_id)
        if state is None:
            self.devices[card.device_id] = DeviceState(card)
        else:
            state.card = card  # same key (the id binds it); board, firmware or owner may change
        return card

    def check(self, topic: str, data: bytes) -> messages.DeviceMessage:
        """Return the verified message, or raise ProtocolError with the reason it is refused."""
        device_id, kind = topics.parse(topic)
        if kind not in DEVICE_KINDS:
            raise ProtocolError("wrong-kind", f"{kind} is not a device message")
        message = messages.parse_device_message(data, kind)
        if message.device_id != device_id:
            raise ProtocolError("wrong-topic", f"signed by {message.device_id}, published under {device_id}")
        return self._verify(message, data)

    def check_detached(self, data: bytes, kind: str = "reading") -> messages.DeviceMessage:
        """Verify a message that arrived without a topic (a file, a webhook body)."""
        return self._verify(messages.parse_device_message(data, kind), data)

    def _verify(self, message: messages.DeviceMessage, data: bytes) -> messages.DeviceMessage:
        device_id = message.device_id
        state = self.devices.get(device_id)
        if state is None:
            raise ProtocolError("unknown-device", f"no card for {device_id}")
        cose.verify_sign1(message.message, state.card.public_key, wire.nacl_verify)
        counters = (message.kind, message.boot, message.seq)
        digest = hashlib.sha256(data).digest()
        window = state.windows.setdefault(message.kind, replay.ReplayWindow())
        try:
            window.accept(message.boot, message.seq)
        except ProtocolError:
            if state.recent.get(counters) == digest:
                raise ProtocolError("duplicate", f"boot {message.boot} seq {message.seq} again") from None
            raise
        state.recent[counters] = digest
        if len(state.recent) > _RECENT:
            state.recent.popitem(last=False)
        return message
