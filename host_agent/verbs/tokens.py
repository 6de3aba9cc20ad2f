"""Create, list and revoke API tokens (stored hashed; shown once)."""

from __future__ import annotations

import argparse

from host_agent import tokens
from host_agent.verbs.common import add_config_argument, load_config, open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    sub = parser.add_subparsers(dest="action", required=True)
    original_add_parser = sub.add_parser

    def add_parser(*args, **kwargs):
        action_parser = original_add_parser(*args, **kwargs)
        add_config_argument(action_parser, is_action=True)
        return action_parser

    sub.add_parser = add_parser  # type: ignore[method-assign]
    create = sub.add_parser("create", help="create a token and print it once")
    create.add_argument("name")
    create.add_argument("--scope", choices=tokens.SCOPES, default="read")
    create.add_argument("--device", action="append", help="limit to this device (repeatable)")
    create.add_argument("--metric", action="append", help="limit to this metric (repeatable)")
    create.add_argument("--account", help="vendor role: the owner id whose claimed devices it sees")
    sub.add_parser("list", help="every token (never the secret)")
    revoke = sub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")


def run(args: argparse.Namespace) -> int:
    store = open_store(load_config(args))
    if args.action == "create":
        print(tokens.issue(store, args.name, args.scope, args.device, args.metric, args.account))
    elif args.action == "list":
        for token in store.tokens():
            state = "revoked" if token["revoked"] else "live"
            print(
                f"{token['name']}: {token['scope']} {state} devices {token['devices'] or 'all'} "
                f"metrics {token['metrics'] or 'all'}"
                + (f" account {token['account']}" if token["account"] else "")
            )
    else:
        tokens.revoke(store, args.name)
        print(f"token {args.name} revoked")
    return 0
