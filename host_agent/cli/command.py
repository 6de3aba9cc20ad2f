"""Send a signed command to a device and wait for its signed acknowledgement."""

from __future__ import annotations

import argparse
import json
from typing import Any

from host_agent.cli.common import add_config_argument, call_agent, load_config
from host_agent.commands.control import OPS
from host_agent.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("device_id")
    parser.add_argument("op", choices=OPS)
    parser.add_argument(
        "args",
        nargs="?",
        default="{}",
        help='arguments as JSON, e.g. \'{"sensor": "env", "interval_s": 5}\'; hand-over: \'{"owner_hex": KEY}\'',
    )
    parser.add_argument("--timeout-s", type=float, default=10.0)


def run(args: argparse.Namespace) -> int:
    try:
        command_args: object = json.loads(args.args)
    except json.JSONDecodeError as error:
        raise UserError(f"args must be a JSON object: {error}") from None
    if not isinstance(command_args, dict):
        raise UserError("args must be a JSON object")
    body: dict[str, Any] = {"op": args.op, "args": command_args, "timeout_s": args.timeout_s}
    config = load_config(args)
    result = call_agent(config, "POST", f"/devices/{args.device_id}/commands", body, args.timeout_s + 10)
    print(f"{args.device_id} {args.op}: {result['outcome']} {result['detail']}".rstrip())
    if result["result"] is not None:
        print(json.dumps(result["result"], indent=2))
    return 0 if result["outcome"] == "applied" else 1
