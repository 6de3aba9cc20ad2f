"""Flash a board: base image (optional), firmware, board file and provisioning, then read its card.

The verb; the steps are host_agent.board.flash (docs/flashing.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from host_agent.board import files as boards
from host_agent.board.flash import flash
from host_agent.cli.common import add_config_argument

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--board", required=True, choices=boards.names(), help="board name (a file in boards/)"
    )
    parser.add_argument("--port", help="serial port; default: the only USB serial port there is")
    parser.add_argument(
        "--vendor", required=True, help="vendor MQTT endpoint HOST:PORT (the default destination)"
    )
    parser.add_argument(
        "--vendor-ca",
        type=Path,
        help="the vendor broker's CA certificate (PEM): the device then speaks TLS to it and verifies it",
    )
    parser.add_argument(
        "--client-cert",
        type=Path,
        help="the device's certificate the vendor issued (PEM or DER), for vendors that authenticate "
        "devices by certificate (mutual TLS); needs --vendor-ca and --client-key",
    )
    parser.add_argument("--client-key", type=Path, help="the private key of --client-cert (PEM or DER)")
    parser.add_argument(
        "--vendor-receipt-key",
        help="the vendor agent's receipt key (64 hex digits): the device keeps each reading until the"
        " vendor's signed receipt says it is stored; without it, until the vendor broker's PUBACK",
    )
    parser.add_argument(
        "--wifi", type=Path, help='JSON file {"ssid": ..., "password": ...} (stays on this machine)'
    )
    parser.add_argument("--owner-key", type=Path, help="owner key file (default: the agent's, from --config)")
    parser.add_argument(
        "--release-key",
        action="append",
        help="a vendor's release key (64 hex digits) the device trusts for updates; repeat for more (at most 4)",
    )
    parser.add_argument("--image", type=Path, help="MicroPython image (.bin) to write first with esptool")
    parser.add_argument(
        "--card-out", type=Path, help="where to save the device card (default ./<device_id>.card)"
    )
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Flash a board: image, firmware, board file and provisioning; read back its card."""
    return flash(args)
