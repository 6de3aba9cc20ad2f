"""Send a signed firmware release to a device over the air and follow it to the device's verdict."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from host_agent.cli.common import add_config_argument, call_agent, load_config
from host_agent.errors import UserError
from host_agent.updates.desk import import_release

POLL_S = 0.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("device_id")
    parser.add_argument(
        "--release", type=Path, required=True, help="a release folder signed by `firstparty release sign`"
    )
    parser.add_argument(
        "--approve",
        action="store_true",
        help="approve the (vendor's) release in the owner's name first: the agent's owner key signs it",
    )
    parser.add_argument("--timeout-s", type=float, default=600.0, help="give up following it after this long")


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    release = import_release(config.data_dir, args.release)
    if args.approve:
        call_agent(config, "POST", f"/releases/{release.tag}/approve")
    path = f"/devices/{args.device_id}/update"
    # GET|POST /devices/{id}/update's JSON (host_agent.updates.desk.Progress)
    state: dict[str, Any] = call_agent(config, "POST", path, {"release": release.tag})
    version = ".".join(str(part) for part in release.version)
    deadline = time.monotonic() + args.timeout_s
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), transient=True) as bar:
        task = bar.add_task(f"{args.device_id} <- {version}", total=release.total)
        while True:
            transfer: dict[str, Any] = state.get("transfer") or {}
            update: dict[str, Any] = state.get("update") or {}
            if update.get("release") == release.tag and "received" in update:
                bar.update(task, completed=update["received"])
            if transfer.get("release") == release.tag and not transfer.get("running"):
                break
            if time.monotonic() > deadline:
                raise UserError(
                    f"no verdict within {args.timeout_s:g} s (now {state['state']}): the agent goes on; "
                    "run the same command again to follow it"
                )
            time.sleep(POLL_S)
            state = call_agent(config, "GET", path)
    outcome = transfer.get("outcome") or state["state"]
    print(f"{args.device_id} {version} ({release.tag}): {outcome}")
    return 0 if outcome in ("installed-on-probation", "confirmed") else 1
