"""Build the firmware for a board: the Ed25519 fixed-base table, and `.mpy` files from mpy-cross.

The verb; the build itself is host_agent.board.build.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from host_agent.board import files as boards
from host_agent.board.build import ARCHES, compile_firmware

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--board", help="a board name from boards/ (its file gives the architecture)")
    target.add_argument("--arch", choices=ARCHES, help="mpy-cross architecture (default x64, the unix port)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default build/firmware-<arch>)"
    )


def run(args: argparse.Namespace) -> int:
    arch = boards.load(args.board)["mpy_arch"] if args.board else (args.arch or "x64")
    build = compile_firmware(arch, args.out)
    print(f"firmware for {build.arch}: {build.files} files in {build.path}")
    print(f"  code (.mpy + entry points): {build.mpy_bytes} bytes; Ed25519 table: {build.data_bytes} bytes")
    return 0
