"""What the agent's verbs share: the config option, the store, and the running agent's API."""

from __future__ import annotations

import argparse
import json
import os
import secrets
from pathlib import Path
from typing import Any

import httpx

from host_agent import config as agent_config
from host_agent.errors import UserError
from host_agent.store import Store
from host_agent.store import open_store as open_backend

DEFAULT_CONFIG = "firstparty.toml"
RUNTIME_FILE = "agent.json"  # written by `serve`: where its API listens, and the CLI's token


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
    path = args.config or (
        Path(os.environ["FIRSTPARTY_CONFIG"]) if "FIRSTPARTY_CONFIG" in os.environ else None
    )
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = Path(DEFAULT_CONFIG)
    if path is None:
        return agent_config.from_dict({"data_dir": str(Path.home() / ".firstparty")})
    return agent_config.load(path)


def open_store(config: agent_config.Config) -> Store:
    if config.store.url is None and not config.store.path.exists():
        raise UserError(
            f"no agent database at {config.store.path}: start the agent with `firstparty serve` first"
        )
    return open_backend(config.store.path, config.store.url)


def write_runtime(config: agent_config.Config, api_port: int, store: Store) -> str:
    """Give the CLI on this machine an admin token for the running agent (file mode 0600); return it."""
    from host_agent.api import tokens

    path = config.data_dir / RUNTIME_FILE
    name = "cli-" + secrets.token_hex(4)
    token = tokens.issue(store, name, "admin")
    for old in store.tokens():
        if old["name"].startswith("cli-") and old["name"] != name and old["revoked"] is None:
            store.revoke_token(old["name"])
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump({"api": f"http://{config.api.host}:{api_port}", "token": token, "pid": os.getpid()}, file)
    os.replace(tmp, path)
    return token


def call_agent(
    config: agent_config.Config, method: str, path: str, body: Any = None, timeout_s: float = 60
) -> Any:
    """Call the running agent's API with the CLI's token; raise UserError with what to do."""
    runtime = config.data_dir / RUNTIME_FILE
    if not runtime.exists():
        raise UserError(f"the agent is not running (no {runtime}): start it with `firstparty serve`")
    info = json.loads(runtime.read_text())
    try:
        response = httpx.request(
            method,
            info["api"] + path,
            json=body,
            headers={"authorization": f"Bearer {info['token']}"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as error:
        raise UserError(
            f"cannot reach the agent at {info['api']} ({error}): is `firstparty serve` running?"
        ) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise UserError(f"the agent refused: {detail}")
    return response.json()
