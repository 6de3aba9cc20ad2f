"""What the agent's verbs share: the config option, the store, and the running agent's API."""

from __future__ import annotations

import argparse
from pathlib import Path

from host_agent import config as agent_config
from host_agent.api.client import RUNTIME_FILE, call_agent, write_runtime
from host_agent.config import DEFAULT_CONFIG
from host_agent.errors import UserError
from host_agent.store import Store
from host_agent.store import open_store as open_backend
from host_agent.terms import roster

__all__ = [
    "RUNTIME_FILE",
    "ActionAdder",
    "add_config_argument",
    "call_agent",
    "load_config",
    "open_store",
    "write_runtime",
]


def add_config_argument(parser: argparse.ArgumentParser, is_action: bool = False) -> None:
    """Add --config; on an action's parser too, so it may follow the action (`audit verify --config`)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS if is_action else None,
        help=f"agent configuration (TOML); default $FIRSTPARTY_CONFIG or ./{DEFAULT_CONFIG}, else built-in defaults",
    )


class ActionAdder:
    """Adds a verb's actions; each action's parser takes --config too (`audit verify --config F`)."""

    def __init__(self, parser: argparse.ArgumentParser):
        add_config_argument(parser)
        self._sub = parser.add_subparsers(dest="action", required=True)

    def add(self, name: str, help: str) -> argparse.ArgumentParser:
        action = self._sub.add_parser(name, help=help)
        add_config_argument(action, is_action=True)
        return action


def load_config(args: argparse.Namespace) -> agent_config.Config:
    """The configuration --config names, else $FIRSTPARTY_CONFIG, ./firstparty.toml or the defaults."""
    path = agent_config.locate(args.config)
    config = agent_config.resolve(path)
    roster.check_terms_config(str(path or "config"), config.terms)
    return config


def open_store(config: agent_config.Config) -> Store:
    if config.store.url is None and not config.store.path.exists():
        raise UserError(
            f"no agent database at {config.store.path}: start the agent with `firstparty serve` first"
        )
    return open_backend(config.store.path, config.store.url)
