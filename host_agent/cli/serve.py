"""Run the host agent (owner or vendor role) until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from host_agent.cli.common import add_config_argument, load_config, write_runtime
from host_agent.console import auth
from host_agent.service import Agent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--role", choices=("owner", "vendor"), help="override the configured role")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = load_config(args)
    if args.role:
        config = config.with_role(args.role)
    agent = Agent(config)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_sigterm)

    def announce() -> None:
        if agent.ready.wait(60) and agent.api_port:
            token = write_runtime(config, agent.api_port, agent.store)
            api = f"http://{config.api.host}:{agent.api_port}"
            link = auth.link_url(api, auth.create_link_code(agent.store, token))
            print(
                f"firstparty: {config.role} agent, owner {agent.owner.owner_id}, API {api}\n"
                f"firstparty: console {api}/ (sign in once with {link} within 10 minutes,"
                " or later with `firstparty console-link`)",
                flush=True,
            )

    threading.Thread(target=announce, daemon=True).start()
    agent.run()
    return 0
