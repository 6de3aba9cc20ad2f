"""The host's half of the topic layout (fp.topics builds topics): subscription filters, and the
parse of a topic. A board builds topics and never parses one; kept apart, these take no names in
its name pool (qstrs), which holds every name of every module loaded, for good."""

from fp.errors import ProtocolError
from fp.ids import is_valid_id
from fp.topics import KINDS, PREFIX


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
