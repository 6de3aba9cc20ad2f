"""The accept/reject core for what devices publish: topic, kind, signer, replay and duplicate.

Pure core: values in, a verified message or a ProtocolError with its reason out. The agent's ingest
(host_agent.ingest.intake), `firstparty verify`, the demo and every other recipient decide with
these functions, so a message is refused for the same reason wherever it arrives. `Verifier` is the
in-memory recipient (cards and replay windows held in a dict); ingest keeps the same state in the
store and calls the same functions.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from fp import cose, messages, replay, topic_parse
from fp.errors import ProtocolError
from host_agent import wire

__all__ = [
    "DEVICE_KINDS",
    "DeviceState",
    "Verifier",
    "admit_counters",
    "check_card",
    "check_signer",
    "digest",
    "open_message",
    "read_topic",
]

DEVICE_KINDS = ("reading", "status", "ack")
_RECENT = 4096  # digests kept to tell a harmless redelivery ("duplicate") from a replay


def read_topic(topic: str) -> tuple[str, str]:
    """Return (device_id, kind) of a device topic, or raise ProtocolError('wrong-topic')."""
    return topic_parse.parse(topic)


def open_message(device_id: str, kind: str, data: bytes) -> messages.DeviceMessage:
    """Parse the message a topic names, and check its signer is the device of the topic."""
    if kind not in DEVICE_KINDS:
        raise ProtocolError("wrong-kind", f"{kind} is not a device message")
    message = messages.parse_device_message(data, kind)
    if message.device_id != device_id:
        raise ProtocolError("wrong-topic", f"signed by {message.device_id}, published under {device_id}")
    return message


def check_card(topic: str, data: bytes) -> messages.Card:
    """Parse a device card (id binding, self-signature) published on `topic`, its own card topic."""
    card = wire.parse_card(data)
    if topic_parse.parse(topic) != (card.device_id, "card"):
        raise ProtocolError("wrong-topic", f"card of {card.device_id} on {topic}")
    return card


def check_signer(
    message: messages.DeviceMessage, public_key: bytes | None, *, is_rejected: bool = False
) -> None:
    """Verify the signature with the key of the device's card, or raise why the signer is not trusted."""
    if public_key is None:
        raise ProtocolError("unknown-device", f"no card for {message.device_id}")
    if is_rejected:
        raise ProtocolError("unknown-device", f"{message.device_id} was rejected by the owner")
    cose.verify_sign1(message.message, public_key, wire.nacl_verify)


def digest(data: bytes) -> bytes:
    """What a recipient keeps of accepted bytes to recognise them again (SHA-256)."""
    return hashlib.sha256(data).digest()


def admit_counters(
    window: replay.ReplayWindow,
    message: messages.DeviceMessage,
    data: bytes,
    held: Callable[[], bytes | None],
    *,
    is_store_authority: bool = False,
) -> None:
    """Record the message's (boot, seq) in its window, or raise 'duplicate' or 'replay'.

    `held()` gives the digest of the bytes already accepted under these counters, or None; it is
    asked only when the window refuses. The same bytes again (a QoS 1 redelivery) are a harmless
    'duplicate'; other bytes under the same counters are a 'replay'. With `is_store_authority` (the
    consumers of one $share/ group reorder a device's stream by more than the window) a counter
    that fell behind the window of the current boot and that the store does not hold is accepted:
    the store, which holds every accepted (boot, seq), is the authority there.
    """
    try:
        window.accept(message.boot, message.seq)
    except ProtocolError:
        held_digest = held()
        if held_digest is not None and hmac.compare_digest(held_digest, digest(data)):
            raise ProtocolError("duplicate", f"boot {message.boot} seq {message.seq} again") from None
        is_behind = message.boot == window.boot and window.top - message.seq >= replay.WINDOW
        if not (is_store_authority and is_behind) or held_digest is not None:
            raise


@dataclass
class DeviceState:
    card: messages.Card
    # one window per kind: a device publishes its status on every connection, ahead of the
    # readings of an earlier boot that its flash buffer still has to drain (docs/protocol.md 5)
    windows: dict[str, replay.ReplayWindow] = field(default_factory=dict[str, replay.ReplayWindow])
    recent: OrderedDict[tuple[str, int, int], bytes] = field(
        default_factory=OrderedDict[tuple[str, int, int], bytes]
    )


class Verifier:
    """Holds the cards and anti-replay state of the devices one recipient knows."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceState] = {}

    def learn_card(self, data: bytes, topic: str | None = None) -> messages.Card:
        """Check a device card (id binding, self-signature) and remember its key."""
        card = wire.parse_card(data) if topic is None else check_card(topic, data)
        state = self.devices.get(card.device_id)
        if state is None:
            self.devices[card.device_id] = DeviceState(card)
        else:
            state.card = card  # same key (the id binds it); board, firmware or owner may change
        return card

    def check(self, topic: str, data: bytes) -> messages.DeviceMessage:
        """Return the verified message, or raise ProtocolError with the reason it is refused."""
        device_id, kind = read_topic(topic)
        return self._verify(open_message(device_id, kind, data), data)

    def check_detached(self, data: bytes, kind: str = "reading") -> messages.DeviceMessage:
        """Verify a message that arrived without a topic (a file, a webhook body)."""
        return self._verify(messages.parse_device_message(data, kind), data)

    def _verify(self, message: messages.DeviceMessage, data: bytes) -> messages.DeviceMessage:
        state = self.devices.get(message.device_id)
        check_signer(message, state.card.public_key if state else None)
        assert state is not None
        counters = (message.kind, message.boot, message.seq)
        window = state.windows.setdefault(message.kind, replay.ReplayWindow())
        admit_counters(window, message, data, lambda: state.recent.get(counters))
        state.recent[counters] = digest(data)
        if len(state.recent) > _RECENT:
            state.recent.popitem(last=False)
        return message
