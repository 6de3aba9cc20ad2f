"""Build steps the firmware needs before it runs: the Ed25519 fixed-base table (host-generated)."""

from __future__ import annotations

import argparse
import runpy

from host_agent.paths import firmware_dir


def ensure_ed25519_table() -> str:
    """Generate firmware/fp/ed25519_base.bin if it is missing or stale; return its path."""
    generator = firmware_dir() / "tools" / "gen_ed25519_table.py"
    module = runpy.run_path(str(generator))
    return module["ensure_table"](str(firmware_dir() / "fp" / "ed25519_base.bin"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    path = ensure_ed25519_table()
    if not args.quiet:
        print(f"Ed25519 table: {path}")


if __name__ == "__main__":
    main()
