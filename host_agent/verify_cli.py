"""Verify signed readings as a third party, holding nothing but the device cards."""

from __future__ import annotations

import argparse
from pathlib import Path

from fp.errors import ProtocolError
from host_agent.errors import UserError
from host_agent.verifier import Verifier


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--card", type=Path, action="append", required=True, help="a device card file (repeatable)"
    )
    parser.add_argument("--kind", choices=("reading", "status", "ack"), default="reading")
    parser.add_argument("messages", type=Path, nargs="+", help="files, each holding one signed message")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None


def run(args: argparse.Namespace) -> int:
    verifier = Verifier()
    for card_path in args.card:
        try:
            card = verifier.learn_card(_read(card_path))
        except ProtocolError as error:
            raise UserError(f"{card_path} is not a valid device card: {error}") from None
        print(f"card {card_path}: device {card.device_id}, board {card.board}, firmware {card.firmware}")
    refused = 0
    for path in args.messages:
        try:
            message = verifier.check_detached(_read(path), args.kind)
        except ProtocolError as error:
            refused += 1
            print(f"{path}: REFUSED {error.reason}: {error.detail}")
            continue
        body = message.body
        if args.kind == "reading":
            body = ", ".join(f"{name} {value:g} {unit or ''}".strip() for name, unit, value in message.body)
        print(
            f"{path}: verified {args.kind} from {message.device_id} boot {message.boot} seq {message.seq}: {body}"
        )
    return 1 if refused else 0
