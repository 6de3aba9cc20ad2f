"""Print the agent's OpenAPI document, or write it to a file (docs/openapi.json is its output)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from host_agent.errors import UserError
from host_agent.webapp import openapi_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="write the document to this file (default: print it)")


def run(args: argparse.Namespace) -> int:
    text = openapi_text()
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text)
    except OSError as error:
        raise UserError(f"cannot write {args.out}: {error.strerror}") from None
    print(f"OpenAPI document written to {args.out}")
    return 0
