"""Build the firmware for a board: the Ed25519 fixed-base table, and `.mpy` files from mpy-cross.

Boards run precompiled `.mpy` (no compiler heap at import). Modules with viper code (fp.sha512v,
fp.fe25519) contain machine code, so a build is per architecture: `x64` for the unix port (board
`sim`), `x86` for a 32-bit unix port, `xtensawin` for ESP32 and ESP32-S3, `rv32imc` for ESP32-C3;
`none` leaves the viper modules out (ports without a native emitter, such as the webassembly port:
the firmware then falls back to plain Python for them).

mpy-cross runs with -O3: no line numbers in the bytecode (and no asserts; the firmware has none),
about 2.3 KB less heap on a 32-bit board whose code is loaded from `.mpy` files (nothing from a
ROMFS image, whose code stays in flash; docs/benchmarks.md). A traceback still names each frame's
module (`-s`) and function, and the board's crash line leaves out the line number it no longer
knows (fp.app.crash_line).
"""

from __future__ import annotations

import argparse
import runpy
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from host_agent.errors import UserError
from host_agent.paths import REPO, firmware_dir, tool_beside

NATIVE_MODULES = ("fe25519", "sha512v")  # viper: machine code, left out of an arch-free build
ARCHES = (
    "none",
    "x64",
    "x86",
    "armv6m",
    "armv7m",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
)
ENTRY_POINTS = ("main.py",)  # boards run these by name: they stay source, and stay tiny


@dataclass
class Build:
    path: Path
    arch: str
    mpy_bytes: int
    data_bytes: int
    files: int


def ensure_ed25519_table() -> str:
    """Generate firmware/fp/ed25519_base.bin if it is missing or stale; return its path."""
    generator = firmware_dir() / "tools" / "gen_ed25519_table.py"
    module = runpy.run_path(str(generator))
    return module["ensure_table"](str(firmware_dir() / "fp" / "ed25519_base.bin"))


def mpy_cross_command() -> str:
    found = tool_beside("mpy-cross")
    if not found:
        raise UserError("mpy-cross is missing: run `bash scripts/install`")
    return found


def source_name(module: Path) -> str:
    """The source name mpy-cross stores in a module's .mpy (`-s`, what a traceback says): its module
    name (`fp.mqtt`; `fp` for the package's __init__), a name the board's qstr pool holds anyway
    from the import, where a file name (`fp/mqtt.py`) would be one name more per module."""
    return "fp" if module.stem == "__init__" else f"fp.{module.stem}"


def compile_firmware(arch: str, out: Path | None = None) -> Build:
    """Compile the firmware for `arch` into `out` (default build/firmware-<arch>); return its sizes."""
    if arch not in ARCHES:
        raise UserError(f"unknown mpy-cross architecture {arch!r}; expected one of {', '.join(ARCHES)}")
    source = firmware_dir()
    table = Path(ensure_ed25519_table())
    out = out or REPO / "build" / f"firmware-{arch}"
    if out.exists():
        shutil.rmtree(out)
    (out / "fp").mkdir(parents=True)
    mpy_bytes = files = 0
    for module in sorted((source / "fp").glob("*.py")):
        if arch == "none" and module.stem in NATIVE_MODULES:
            continue
        target = out / "fp" / (module.stem + ".mpy")
        result = subprocess.run(
            [
                mpy_cross_command(),
                *([] if arch == "none" else [f"-march={arch}"]),
                "-O3",  # no line numbers: less heap from .mpy (the module docstring)
                "-o",
                str(target),
                "-s",
                source_name(module),
                str(module),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise UserError(f"mpy-cross failed on {module.name}: {result.stderr.strip().splitlines()[-1]}")
        mpy_bytes += target.stat().st_size
        files += 1
    for entry in ENTRY_POINTS:
        shutil.copy(source / entry, out / entry)
        mpy_bytes += (out / entry).stat().st_size
        files += 1
    shutil.copy(table, out / "fp" / table.name)
    return Build(out, arch, mpy_bytes, table.stat().st_size, files + 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    path = ensure_ed25519_table()
    if not args.quiet:
        print(f"Ed25519 table: {path}")


if __name__ == "__main__":
    main()
