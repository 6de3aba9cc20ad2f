"""The one place that builds and parses MQTT topics (layout version 1)."""

from fp.errors import ProtocolError
from fp.ids import is_valid_id

PREFIX = "fp/v1/"
# kind -> last topic level. Readings, acknowledgements, status and card come from the device;
# commands, receipts and update messages (fp.ota) go to it; endorsements are published by the owner
# or vendor about it.
KINDS = ("reading", "command", "ack", "status", "card", "endorsement", "receipt", "update")


def topic(device_id: str, kind: str) -> str:
    """Return the topic of `kind` for `device_id`, e.g. fp/v1/<id>/reading."""
    if kind not in KINDS:
        raise ValueError("unknown topic kind " + str(kind))
    return PREFIX + device_id + "/" + kind


def wildcard(kind: str) -> str:
    """Return the subscription filter for `kind` from every device."""
    return PREFIX + "+/" + kind


def parse(text: str) -> tuple[str, str]:
    """Split a topic into (device_id, kind); raise ProtocolError('wrong-topic') if it is not ours."""
    if not text.startswith(PREFIX):
        raise ProtocolError("wrong-topic", "topic outside " + PREFIX)
    parts = text[len(PREFIX) :].split("/")
    if len(parts) != 2 or parts[1] not in KINDS or not is_valid_id(parts[0]):
        raise ProtocolError("wrong-topic", "not fp/v1/<device-id>/<kind>: " + text[:80])
    return parts[0], parts[1]
