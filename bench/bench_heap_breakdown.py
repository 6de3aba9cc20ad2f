"""What the firmware's heap holds on a 32-bit MicroPython, step by step, from ROMFS and from .mpy.

Run: FP_MICROPYTHON=/path/to/32-bit/micropython .venv/bin/python bench/bench_heap_breakdown.py
[--baseline REV]  (the i386 build: docs/benchmarks.md; without FP_MICROPYTHON, the venv's 64-bit
unix port, and the figures say so). With --baseline, the firmware of git revision REV (exported
with `git archive`, compiled by its own build code) is measured in the same run, step for step.

Each boot runs firmware/tools/heap_steps.py on board `sim` with the HTTP API on and an owner key
set (bench_memory.py's configuration), against a mosquitto of its own, after a first boot of the
same firmware has checked the flash files (a board in the field boots from its checked copy): each module imported on
its own, the boot checks, the device's set-up piece by piece, RUN_S seconds of running, one
command (its owner's get-info, signed for it: judged, verified, applied), then one more of each
running object (a probe). After the tables, the names (qstrs) the
board holds after the command, beside the pool's chunk boundary below them: the pool grows in
doubling chunks and never shrinks, so only getting under that boundary gives its last chunk back.
ROMFS: the build packed by `mpremote romfs build` and mounted with vfs.VfsRom over the image read
into the heap before the first figure (the unix port has no ROM partition), so the image itself
is not counted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "firmware")]

from bench.bench_memory import baseline_build, interpreter  # noqa: E402
from host_agent.board.build import compile_firmware  # noqa: E402
from host_agent.bus.mosquitto import Mosquitto  # noqa: E402
from tests.helpers import build_romfs, owned_sim_flash  # noqa: E402

STEPS = REPO / "firmware" / "tools" / "heap_steps.py"


def steps(command: str, build: Path, flash: Path, image: Path | None) -> list[tuple[str, int, int]]:
    """Run heap_steps.py on `build` (from the ROMFS `image` if given); return (step, added, total)."""
    script = STEPS.read_text()
    if image is not None:
        mount = (
            "import sys, vfs\n"
            f"with open({str(image)!r}, 'rb') as _f:\n"
            "    _image = _f.read()\n"
            "vfs.mount(vfs.VfsRom(_image), '/rom')\n"
            "sys.path.insert(0, '/rom')\n"
        )
        script = mount + script
    env = dict(os.environ, MICROPYPATH=f".frozen:{build}")
    # a board's first boot checks its flash files and leaves the checked copy every later boot
    # uses (fp.checked): measure a later one, as a board in the field runs
    first = "from fp import app\napp.load_settings()\n"
    subprocess.run([command, "-c", first], cwd=flash, env=env, check=True, capture_output=True, timeout=60)
    result = subprocess.run(
        [command, "-X", "heapsize=512k", "-c", script],
        cwd=flash,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"heap_steps.py failed:\n{result.stdout}\n{result.stderr}")
    out = []
    for line in result.stdout.splitlines():
        if line.startswith("step "):
            name, added, total = line[5:].rsplit(" ", 2)
            out.append((name, int(added), int(total)))
        elif line.startswith("info "):
            print("  " + line)
        elif line.startswith("qstr pool"):
            print("  " + line)
            print("  " + names_figure(line))
            out.append(("names", 0, names_count(line)))
    return out


# The qstr pool's chunks (MicroPython's py/qstr.c, measured on the i386 and 64-bit unix ports by
# making names one at a time): 20 entries, then each chunk twice the last
FIRST_CHUNK = 20


def chunk_boundaries(count: int) -> tuple[int, int]:
    """The pool's capacity before and after the chunk that holds the `count`th dynamic name."""
    low, size = 0, FIRST_CHUNK
    while low + size < count:
        low, size = low + size, size * 2
    return low, low + size


def names_count(line: str) -> int:
    """n_qstr from micropython.qstr_info()'s pool line: the dynamic names (qstrs) held."""
    fields = dict(part.strip().split("=") for part in line.split(":", 1)[1].split(","))
    return int(fields["n_qstr"])


def names_figure(line: str) -> str:
    """The names held and the pool chunk they reach, as one line."""
    count = names_count(line)
    low, high = chunk_boundaries(count)
    return f"names {count}: the pool's last chunk holds names {low + 1}..{high}; {count - low} fewer would give it back"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="a git revision to measure in the same run")
    args = parser.parse_args()
    command, arch = interpreter()
    work = Path(tempfile.mkdtemp(prefix="fp-bench-heap-"))
    builds = {"now": compile_firmware(arch, work / "build-now").path}
    if args.baseline:
        builds["baseline " + args.baseline] = baseline_build(args.baseline, arch, work)
    broker = Mosquitto(work / "broker").start()
    results: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    try:
        for label, build in builds.items():
            image = build_romfs(build, work / (build.name + ".romfs"))
            for where, rom in (("ROMFS", image), (".mpy", None)):
                flash = work / f"flash-{build.name}-{where}"
                owned_sim_flash(flash, (broker.host, broker.port), work / f"owner-{build.name}-{where}")
                print(f"{label}, {where}:")
                results[(label, where)] = steps(command, build, flash, rom)
    finally:
        broker.stop()
    word = "32-bit" if arch == "x86" else "64-bit (set FP_MICROPYTHON to a 32-bit build)"
    print(f"interpreter: {command} ({word})")
    for where in ("ROMFS", ".mpy"):
        columns = [label for label in builds]
        print(f"\n{where}: bytes each step adds (gc.mem_alloc after a collection), then the total")
        print("| step | " + " | ".join(columns) + " |")
        print("|---|" + "---|" * len(columns))
        names = [name for name, _, _ in results[("now", where)] if name != "names"]
        for label in columns:
            names += [name for name, _, _ in results[(label, where)] if name not in names and name != "names"]
        for name in names:
            cells = []
            for label in columns:
                found = [added for step, added, _ in results[(label, where)] if step == name]
                cells.append(f"{found[0]:,}" if found else "-")
            print(f"| {name} | " + " | ".join(cells) + " |")
        totals = []
        for label in columns:
            running = [total for step, _, total in results[(label, where)] if step.startswith("running")]
            totals.append(f"**{running[0]:,}**" if running else "-")
        print("| total once running | " + " | ".join(totals) + " |")
        cells = []
        for label in columns:
            found = [total for step, _, total in results[(label, where)] if step == "names"]
            cells.append(f"{found[0]} (chunk boundary {chunk_boundaries(found[0])[0]})" if found else "-")
        print("| names held after one command (qstrs) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
