"""Add, list and remove routes: where a device's readings go, on which terms."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from host_agent.cli.common import ActionAdder, call_agent, load_config, open_store
from host_agent.routes import rules as routing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = ActionAdder(parser)
    sub.add("list", help="every route, with its terms")
    remove = sub.add("remove", help="stop a route")
    remove.add_argument("name")
    add = sub.add("add", help="add a route (the agent must be running)")
    add.add_argument("name")
    kinds = add.add_mutually_exclusive_group(required=True)
    kinds.add_argument("--webhook", metavar="URL")
    kinds.add_argument("--mqtt", metavar="HOST:PORT")
    kinds.add_argument(
        "--file", metavar="PATH", help="a file inside the agent's files_dir (a relative path: there)"
    )
    kinds.add_argument("--home-assistant", metavar="HOST:PORT")
    add.add_argument("--topic-prefix", help="mqtt: publish under this prefix")
    add.add_argument("--device", action="append", help="device id (repeatable; default every device)")
    add.add_argument("--metric", action="append", help="metric name (repeatable; default every metric)")
    add.add_argument(
        "--instead-of-vendor", action="store_true", help="the device stops sending to the vendor"
    )
    add.add_argument("--recipient", default="", help="who receives (terms of sharing)")
    add.add_argument("--purpose", default="", help="why (terms of sharing)")
    add.add_argument("--for-days", type=float, help="how long: the route stops by itself after this")
    add.add_argument("--retention-days", type=float, help="how long the recipient may keep the data")
    add.add_argument(
        "--own",
        action="store_true",
        help="the destination is your own (no second party): deliver without an agreement; "
        "otherwise nothing flows until the recipient accepts your terms (firstparty terms proffer)",
    )


def _host_port(text: str) -> dict[str, str | int]:
    host, _, port = text.rpartition(":")
    return {"host": host or text, "port": int(port) if port.isdigit() else 1883}


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    if args.action == "list":
        routes = open_store(config).routes(include_inactive=False)
        if not routes:
            print("no routes")
        for route in routes:
            terms = route.terms
            expires = terms.get("expires_s")
            until = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires)) if expires else "no expiry"
            shown = routing.without_secrets(route.spec())["destination"]  # a password shows as has_password
            print(
                f"{route.name}: {json.dumps(shown)} devices {','.join(route.devices)} "
                f"metrics {','.join(route.metrics)} {route.mode}; to {terms.get('recipient') or '-'} "
                f"for {terms.get('purpose') or '-'} until {until}"
            )
        return 0
    if args.action == "remove":
        result = call_agent(config, "DELETE", f"/routes/{args.name}")
        print(f"route {result['name']} removed")
        return 0
    # the body of POST /routes (host_agent.api.models.RouteIn), as JSON
    destination: dict[str, Any]
    if args.webhook:
        destination = {"type": "webhook", "url": args.webhook}
    elif args.mqtt:
        destination = {"type": "mqtt", **_host_port(args.mqtt)}
        if args.topic_prefix:
            destination["topic_prefix"] = args.topic_prefix
    elif args.file:
        destination = {"type": "file", "path": args.file}
    else:
        destination = {"type": "homeassistant", **_host_port(args.home_assistant)}
    terms: dict[str, Any] = {"recipient": args.recipient, "purpose": args.purpose}
    if args.for_days is not None:
        terms["expires_s"] = int(time.time() + args.for_days * 86400)
    if args.retention_days is not None:
        terms["retention_days"] = args.retention_days
    body: dict[str, Any] = {
        "name": args.name,
        "destination": destination,
        "devices": args.device or ["*"],
        "metrics": args.metric or ["*"],
        "mode": "instead-of" if args.instead_of_vendor else "in-addition-to",
        "terms": terms,
    }
    if args.own:
        body["needs_agreement"] = False
    result = call_agent(config, "POST", "/routes", body)
    print(f"route {args.name} added; share grant {result['grant_hex']}")
    if result.get("needs_agreement"):
        print(
            f"  its readings are held until the recipient accepts your terms: "
            f"firstparty terms proffer AGREEMENT --route {args.name}"
        )
    for outcome in result.get("device_commands", []):
        print(f"  {outcome['device_id']}: set-destinations {outcome['outcome']} {outcome['detail']}".rstrip())
    return 0
