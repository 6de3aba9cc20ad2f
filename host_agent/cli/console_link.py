"""Print a one-time link that signs a browser in to the running agent's console."""

from __future__ import annotations

import argparse
import json

from host_agent.cli.common import RUNTIME_FILE, add_config_argument, load_config, open_store
from host_agent.console import auth
from host_agent.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    runtime = config.data_dir / RUNTIME_FILE
    if not runtime.exists():
        raise UserError(f"the agent is not running (no {runtime}): start it with `firstparty serve`")
    info = json.loads(runtime.read_text())
    store = open_store(config)
    try:
        if store.token(info["token"]) is None:
            raise UserError(f"the CLI's token in {runtime} is revoked: restart `firstparty serve`")
        code = auth.create_link_code(store, info["token"])
    finally:
        store.close()
    print(auth.link_url(info["api"], code))
    return 0
