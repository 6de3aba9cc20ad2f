"""List, show, accept, reject and rename devices."""

from __future__ import annotations

import argparse
import json
import time

from host_agent.cli.common import ActionAdder, call_agent, load_config, open_store
from host_agent.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = ActionAdder(parser)
    sub.add("list", help="every device with its state")
    for action in ("show", "accept", "reject"):
        sub.add(action, help=f"{action} a device").add_argument("device_id")
    rename = sub.add("rename", help="give a device a name")
    rename.add_argument("device_id")
    rename.add_argument("name")


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    if args.action in ("accept", "reject"):
        result = call_agent(config, "POST", f"/pending/{args.device_id}/{args.action}")
        print(f"{result['device_id']}: {result['state']}")
        return 0
    store = open_store(config)
    if args.action == "list":
        devices = store.devices()
        if not devices:
            print("no devices yet")
        for device in devices:
            seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(device.last_seen or 0))
            print(
                f"{device.device_id}  {device.state:<8}  {device.name or '-':<12}  "
                f"{device.board:<10}  fw {device.firmware}  last seen {seen}"
            )
        return 0
    if args.action == "show":
        device = store.device(args.device_id)
        if device is None:
            raise UserError(f"no device {args.device_id}: see `firstparty devices list`")
        print(json.dumps(device.as_dict(), indent=2))
        return 0
    if not store.rename(args.device_id, args.name):
        raise UserError(f"no device {args.device_id}: see `firstparty devices list`")
    store.audit("device-renamed", {"device": args.device_id, "name": args.name})
    print(f"{args.device_id}: named {args.name}")
    return 0
