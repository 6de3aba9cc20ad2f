"""Show the running agent's state: broker, store, counts, rejections, outbox."""

from __future__ import annotations

import argparse
import json

from host_agent.cli.common import add_config_argument, call_agent, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    status = call_agent(load_config(args), "GET", "/status")
    print(json.dumps(status, indent=2))
    return 0 if status["store"] == "ok" and status["broker"] == "connected" else 1
