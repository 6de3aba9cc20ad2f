"""The `firstparty` command line: one verb per job, errors as one line, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from host_agent import __version__
from host_agent.errors import UserError

# Each subcommand module exposes add_arguments(parser) and run(args) -> int.
SUBCOMMANDS: dict[str, str] = {
    "demo": "host_agent.rig.demo",
    "verify": "host_agent.cli.verify",
    "build": "host_agent.cli.build",
    "serve": "host_agent.cli.serve",
    "devices": "host_agent.cli.devices",
    "routes": "host_agent.cli.routes",
    "terms": "host_agent.cli.terms",
    "command": "host_agent.cli.command",
    "tokens": "host_agent.cli.tokens",
    "audit": "host_agent.cli.audit",
    "status": "host_agent.cli.status",
    "console-link": "host_agent.cli.console_link",
    "virtual-board": "host_agent.rig.virtual_board",
    "flash": "host_agent.cli.flash",
    "api-spec": "host_agent.cli.api_spec",
    "release": "host_agent.cli.release",
    "update": "host_agent.cli.update",
}


def _load(module_name: str):
    module = __import__(module_name, fromlist=["run"])
    return module


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="firstparty",
        description="Signed pub/sub smart devices that report to their owner first.",
    )
    parser.add_argument("--version", action="version", version=f"firstparty {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = _load(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0]
        command_parser = sub.add_parser(name, help=summary, description=summary)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
