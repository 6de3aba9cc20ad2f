"""Create, list and revoke API tokens (stored hashed; shown once)."""

from __future__ import annotations

import argparse

from host_agent.api import tokens
from host_agent.cli.common import ActionAdder, load_config, open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = ActionAdder(parser)
    create = sub.add("create", help="create a token and print it once")
    create.add_argument("name")
    create.add_argument("--scope", choices=tokens.SCOPES, default="read")
    create.add_argument("--device", action="append", help="limit to this device (repeatable)")
    create.add_argument("--metric", action="append", help="limit to this metric (repeatable)")
    create.add_argument("--account", help="vendor role: the owner id whose claimed devices it sees")
    sub.add("list", help="every token (never the secret)")
    revoke = sub.add("revoke", help="revoke a token by name")
    revoke.add_argument("name")


def run(args: argparse.Namespace) -> int:
    store = open_store(load_config(args))
    if args.action == "create":
        print(tokens.issue(store, args.name, args.scope, args.device, args.metric, args.account))
    elif args.action == "list":
        for token in store.tokens():
            state = "live" if token.is_live else "revoked"
            print(
                f"{token.name}: {token.scope} {state} devices {token.devices or 'all'} "
                f"metrics {token.metrics or 'all'}" + (f" account {token.account}" if token.account else "")
            )
    else:
        tokens.revoke(store, args.name)
        print(f"token {args.name} revoked")
    return 0
