"""The fixed example messages of docs/protocol.md, built with the firmware codec and fixed keys."""

from __future__ import annotations

from fp import ids, messages
from host_agent.wire import nacl_public_key, nacl_signer

DEVICE_SEED = bytes(range(32))
OWNER_SEED = bytes(range(32, 64))
AGENT_SEED = bytes(range(64, 96))  # an agent's receipt key
DEVICE_KEY = nacl_public_key(DEVICE_SEED)
OWNER_KEY = nacl_public_key(OWNER_SEED)
DEVICE_ID = ids.id_from_public_key(DEVICE_KEY)
OWNER_ID = ids.id_from_public_key(OWNER_KEY)
TIME_S = 1764000000


def build() -> dict[str, bytes]:
    """Return the example messages by name, as the doc shows them."""
    device = nacl_signer(DEVICE_SEED)
    owner = nacl_signer(OWNER_SEED)
    command = messages.encode_command(
        owner,
        OWNER_KEY,
        DEVICE_ID,
        7,
        TIME_S,
        TIME_S + 300,
        "set-interval",
        {"sensor": "temp", "interval_s": 30},
    )
    parsed = messages.parse_command(command)
    return {
        "reading": messages.encode_reading(device, DEVICE_ID, 1, 1, [("temp", "Cel", 21.5)], TIME_S),
        "reading-no-time": messages.encode_reading(device, DEVICE_ID, 1, 2, [("temp", "Cel", 21.5)]),
        "command": command,
        "ack": messages.encode_ack(device, DEVICE_ID, 1, 3, parsed.digest(), 7, "applied", "", None, TIME_S),
        "card": messages.encode_card(device, DEVICE_KEY, "esp32-devkitc", "0.1.0", TIME_S, OWNER_ID),
        "receipt": messages.encode_receipt(
            nacl_signer(AGENT_SEED),
            nacl_public_key(AGENT_SEED),
            DEVICE_ID,
            TIME_S * 1000,
            [[1, 0, 4]],
            TIME_S,
        ),
        "status": messages.encode_status(
            device, DEVICE_ID, 1, 4, "online", {"buffered": 0, "dropped": 0}, TIME_S
        ),
    }
