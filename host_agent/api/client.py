"""The running agent's API as seen from this machine: the runtime file `serve` writes, and a call.

`firstparty serve` (and the demo) write `agent.json` in the data folder: where the API listens and
an admin token for the command line of this machine. The CLI verbs and `firstparty flash` call the
agent through `call_agent`.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

import httpx

from host_agent import config as agent_config
from host_agent.errors import UserError
from host_agent.store.base import Store

__all__ = ["RUNTIME_FILE", "call_agent", "request_agent", "write_runtime"]

RUNTIME_FILE = "agent.json"  # written by `serve`: where its API listens, and the CLI's token


def write_runtime(config: agent_config.Config, api_port: int, store: Store) -> str:
    """Give the CLI on this machine an admin token for the running agent (file mode 0600); return it."""
    from host_agent.api import tokens

    path = config.data_dir / RUNTIME_FILE
    name = "cli-" + secrets.token_hex(4)
    token = tokens.issue(store, name, "admin")
    for old in store.tokens():
        if old.name.startswith("cli-") and old.name != name and old.is_live:
            store.revoke_token(old.name)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump({"api": f"http://{config.api.host}:{api_port}", "token": token, "pid": os.getpid()}, file)
    os.replace(tmp, path)
    return token


def request_agent(
    config: agent_config.Config, method: str, path: str, body: Any = None, timeout_s: float = 60
) -> httpx.Response:
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
    return response


def call_agent(
    config: agent_config.Config, method: str, path: str, body: Any = None, timeout_s: float = 60
) -> Any:
    """Call the running agent's API; return its JSON answer (request_agent says what can go wrong)."""
    return request_agent(config, method, path, body, timeout_s).json()
