"""Socket options the agent's MQTT connections share."""

from __future__ import annotations

import socket
from typing import Any


def no_nagle(client: object, userdata: object, sock: Any) -> None:
    """paho's on_socket_open: send small packets (PUBACKs, forwards) at once, not after the peer's
    delayed ACK of the one before."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (a websocket wrapper): leave it
        pass
