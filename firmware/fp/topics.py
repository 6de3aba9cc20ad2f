"""The one place that builds MQTT topics (layout version 1); fp.topic_parse, the host's, parses them."""

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
