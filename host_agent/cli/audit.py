"""Show the audit log, or verify its hash chain and name the first bad entry."""

from __future__ import annotations

import argparse
import json

from host_agent.cli.common import ActionAdder, load_config, open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = ActionAdder(parser)
    sub.add("verify", help="check every entry commits to the one before it")
    show = sub.add("show", help="print entries")
    show.add_argument("--limit", type=int, default=50)


def run(args: argparse.Namespace) -> int:
    store = open_store(load_config(args))
    if args.action == "verify":
        bad = store.audit_verify()
        count = store.audit_count()
        if bad is None:
            print(f"audit log intact: {count} entries")
            return 0
        print(f"audit log BROKEN at entry {bad[0]}: {bad[1]}")
        return 1
    for entry in store.audit_entries(0, args.limit):
        print(f"{entry['seq']:>6} {entry['kind']:<14} {json.dumps(entry['data'])}")
    return 0
