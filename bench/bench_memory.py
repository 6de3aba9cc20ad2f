"""The firmware's heap on a 32-bit MicroPython: steady heap, start-up peak, per-signature allocation.

Run: FP_MICROPYTHON=/path/to/32-bit/micropython .venv/bin/python bench/bench_memory.py [--baseline REV]
(how that build is made: docs/benchmarks.md). With --baseline, the firmware of git revision REV
(exported with `git archive`, compiled by its own build code) is measured in the same run. Without FP_MICROPYTHON the venv's 64-bit unix port
is measured, and the figures say so. The boot-import heap on the webassembly port (32-bit, from
npm) is printed too when node and build/npm-wasm are there.

The device is the compiled firmware (`.mpy` for the interpreter's architecture) on board `sim`
with its HTTP API on and an owner key set: the configuration issue 20 measured (~100 KB steady on
32-bit before). Steady heap = `get-info`'s heap_bytes (gc.mem_alloc after a collection) once the
device delivers readings, on its second boot (the first checks the flash files and leaves the copy
later boots use); start-up peak = the smallest -X heapsize, in 4 KB steps, at which every
one of BOOTS boots gets to its first delivered reading. The sign figures run the current code and
the big-integer arithmetic it replaced (the code of 2026-12-04) in the same process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "firmware")]

from fp import messages, topics  # noqa: E402
from host_agent.board.build import compile_firmware  # noqa: E402
from host_agent.bus.mosquitto import Mosquitto  # noqa: E402
from host_agent.owner import Owner  # noqa: E402
from host_agent.rig.simdevice import SimDevice, micropython_command  # noqa: E402
from tests.firmware.conftest import Collector  # noqa: E402
from tests.helpers import romfs_code, wait_for  # noqa: E402

BOOTS = 3
GOAL_STEADY = 64 * 1024
GOAL_PEAK = 80 * 1024
GOAL_SIGN_ALLOC = 16 * 1024
SIGN_SCRIPT = """
import gc, time
from fp import ed25519
key = ed25519.SigningKey(bytes(range(32)))
message = bytes(140)
def median_us(rounds):
    samples = []
    for _ in range(rounds):
        start = time.ticks_us()
        key.sign(message)
        samples.append(time.ticks_diff(time.ticks_us(), start))
    samples.sort()
    return samples[rounds // 2]
def allocated():
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    key.sign(message)
    after = gc.mem_alloc()
    gc.enable()
    return after - before
viper = ed25519.fe25519
out = {}
for name in ("now", "bigint", "now", "bigint"):  # interleaved: both see the same machine load
    ed25519.fe25519 = viper if name == "now" else None
    out[name + "_us"] = min(out.get(name + "_us", 10**9), median_us(31))
    out[name + "_alloc"] = allocated()
print(out)
"""


def interpreter() -> tuple[str, str]:
    """(command, mpy architecture) of the interpreter measured."""
    command = micropython_command()
    bits = subprocess.run(
        [command, "-c", "import sys; print(sys.maxsize > 2**32, sys.implementation._mpy >> 10)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    arch = {"1": "x86", "2": "x64"}.get(bits[1], "x64")
    return command, arch


def boot(work: Path, build: Path, broker: Mosquitto, owner: Owner, heapsize: str | None, wait_s: float):
    """Boot one device; return (device, collector) once a reading arrived, or None if it did not."""
    collector = Collector(broker)
    time.sleep(0.2)
    device = SimDevice(
        work, (broker.host, broker.port), owner_key=owner.public, code=build, heapsize=heapsize
    )
    device.start()
    try:
        wait_for(lambda: len(collector.readings) >= 1, wait_s, "a first reading")
    except (AssertionError, TimeoutError):
        device.stop()
        collector.stop()
        return None
    return device, collector


def steady_heap(
    work: Path, build: Path, broker: Mosquitto, owner: Owner, heapsize: str | None
) -> tuple[int, int | None]:
    """get-info's heap_bytes (taken with the command interpreter loaded) and heap_at_rest_bytes
    (taken as the command arrived; None from firmware that does not report it)."""
    started = boot(work / f"steady-{build.name}", build, broker, owner, heapsize, 30)
    assert started, "the device did not boot at " + str(heapsize)
    device, collector = started
    # the first boot checked the flash files and left the checked copy every later boot uses
    # (fp.checked): the figure is the second boot's, as a board in the field runs
    device.stop()
    delivered = len(collector.readings)
    device.start()
    wait_for(lambda: len(collector.readings) > delivered, 30, "a reading from the second boot")
    try:
        device_id = device.device_id()
        time.sleep(3)  # a few readings, the HTTP API up, the boot marked stable
        data = owner.command(device_id, "get-info", {})
        digest = messages.parse_command(data).digest()
        collector.client.publish(topics.topic(device_id, "command"), data, qos=1)
        try:
            wait_for(lambda: digest in collector.acks, 30, "get-info")
        except AssertionError:
            raise AssertionError("no get-info ack; device log:\n" + "\n".join(device.log)) from None
        result = collector.acks[digest]["result"]
        return result["heap_bytes"], result.get("heap_at_rest_bytes")
    finally:
        device.stop()
        collector.stop()


def start_up_peak(work: Path, build: Path, broker: Mosquitto, owner: Owner) -> int:
    """Smallest heap (4 KB steps, binary search over 48..256 KB) at which BOOTS boots in a row
    deliver a reading."""

    def boots_at(size_kb: int) -> bool:
        for attempt in range(BOOTS):
            flash = work / f"peak-{build.name}-{size_kb}-{attempt}"
            started = boot(flash, build, broker, owner, f"{size_kb}k", 10)
            if not started:
                return False
            started[0].stop()
            started[1].stop()
        return True

    low, high = 12, 96  # in 4 KB units: low fails (assumed), high boots (checked)
    if not boots_at(4 * high):
        raise AssertionError("the firmware does not boot in 384 KB")
    while high - low > 1:
        middle = (low + high) // 2
        if boots_at(4 * middle):
            high = middle
        else:
            low = middle
    return 4 * high * 1024


def wasm_boot_imports(work: Path, baseline: str | None = None) -> str:
    from tests.helpers import WASM_PACKAGE, build_romfs, run_micropython_wasm

    if not WASM_PACKAGE.exists():
        return "not measured (no build/npm-wasm: bash scripts/install)"
    if baseline:
        work = work / "wasm-baseline"
        work.mkdir()
        code = baseline_build(baseline, "none", work)
    else:
        code = compile_firmware("none", work / "build-none").path
    flash = work / "wasm-flash"
    SimDevice(flash, ("127.0.0.1", 1883), owner_key=bytes(32), http_port=8080)  # writes the files
    (flash / "key.seed").write_bytes(bytes(range(32)))  # this port's os has no urandom
    script = REPO / "firmware" / "tools" / "boot_heap.py"
    held = int(run_micropython_wasm(script, code, flash))
    image = build_romfs(code, work / "wasm-firmware.romfs")
    in_rom = int(run_micropython_wasm(script, code, flash, romfs=image))
    return (
        f"{held} bytes from .mpy, {in_rom} bytes with the code in a ROMFS image of "
        f"{image.stat().st_size} bytes (ratio {held / in_rom:.2f}; ROMFS goal <= 40960: "
        f"{'met' if in_rom <= 40960 else 'NOT met'}); HTTP API on, owner set; no viper on this port: "
        "big-integer Ed25519 and plain SHA-512"
    )


def baseline_build(rev: str, arch: str, work: Path) -> Path:
    """Compile the firmware of git revision `rev` with that revision's own build code; return it."""
    tree = work / ("tree-" + rev.replace("/", "_"))
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    out = work / ("build-" + rev.replace("/", "_"))
    code = (
        f"import sys; sys.path[:0] = [{str(tree)!r}]\n"
        "from host_agent.board.build import compile_firmware\n"
        f"compile_firmware({arch!r}, __import__('pathlib').Path({str(out)!r}))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tree)
    return out


def heap_figures(work: Path, build: Path, broker: Mosquitto, owner: Owner) -> dict[str, int | None]:
    """Steady heap and start-up peak of `build`, from .mpy and from a ROMFS image of it."""
    steady, at_rest = steady_heap(work, build, broker, owner, "512k")
    peak = start_up_peak(work, build, broker, owner)
    rom_code, image_bytes = romfs_code(work, build)
    rom_steady, rom_at_rest = steady_heap(work, rom_code, broker, owner, "512k")
    rom_steady -= image_bytes
    rom_peak = start_up_peak(work, rom_code, broker, owner) - image_bytes
    return {
        "steady": steady,
        "at_rest": at_rest,
        "rom_at_rest": rom_at_rest - image_bytes if rom_at_rest is not None else None,
        "peak": peak,
        "rom_steady": rom_steady,
        "rom_peak": rom_peak,
        "image": image_bytes,
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="a git revision whose firmware is measured in the same run")
    args = parser.parse_args()
    command, arch = interpreter()
    word = "32-bit" if arch == "x86" else "64-bit (set FP_MICROPYTHON to a 32-bit build)"
    work = Path(tempfile.mkdtemp(prefix="fp-bench-memory-"))
    build = compile_firmware(arch, work / "build").path
    env = dict(os.environ, MICROPYPATH=f".frozen:{REPO / 'firmware'}:{REPO / 'bench'}")
    sign = subprocess.run([command, "-c", SIGN_SCRIPT], capture_output=True, text=True, env=env, check=True)
    figures = json.loads(sign.stdout.strip().replace("'", '"'))
    broker = Mosquitto(work / "broker").start()
    owner = Owner(work / "owner.key")
    base = None
    try:
        if args.baseline:
            base_work = work / "baseline"
            base_work.mkdir()
            base = heap_figures(base_work, baseline_build(args.baseline, arch, base_work), broker, owner)
        now = heap_figures(work, build, broker, owner)
    finally:
        broker.stop()
    steady_roomy, peak, rom_steady, rom_peak = now["steady"], now["peak"], now["rom_steady"], now["rom_peak"]
    image_bytes = now["image"]
    print(f"interpreter: {command} ({word}, .mpy arch {arch})")
    if base is not None:
        print(
            f"baseline {args.baseline}, same run: steady {base['steady']} bytes, start-up peak "
            f"{base['peak'] // 1024} KB; ROMFS steady {base['rom_steady']} bytes, peak about "
            f"{base['rom_peak'] // 1024} KB. Ratios now/baseline: steady {steady_roomy / base['steady']:.2f}, "
            f"peak {peak / base['peak']:.2f}, ROMFS steady {rom_steady / base['rom_steady']:.2f}, "
            f"ROMFS peak {rom_peak / base['rom_peak']:.2f}"
        )
    print(
        f"steady heap (get-info heap_bytes, HTTP API on, owner set): {steady_roomy} bytes; "
        f"goal <= {GOAL_STEADY}: {'met' if steady_roomy <= GOAL_STEADY else 'NOT met'}"
    )
    print(
        f"the same taken at rest (get-info heap_at_rest_bytes: as the command arrived, before the "
        f"interpreter is loaded): {now['at_rest']} bytes from .mpy, {now['rom_at_rest']} from ROMFS"
        + (f"; baseline {base['at_rest']} / {base['rom_at_rest']}" if base is not None else "")
    )
    print(
        f"start-up peak (smallest heap where {BOOTS}/{BOOTS} boots deliver a reading, 4 KB steps): "
        f"{peak // 1024} KB; goal <= {GOAL_PEAK // 1024} KB: {'met' if peak <= GOAL_PEAK else 'NOT met'}"
    )
    print(
        f"per-signature allocation: {figures['now_alloc']} bytes (big-integer code: "
        f"{figures['bigint_alloc']}, {figures['bigint_alloc'] / max(figures['now_alloc'], 1):.0f}x); "
        f"goal <= {GOAL_SIGN_ALLOC}: {'met' if figures['now_alloc'] <= GOAL_SIGN_ALLOC else 'NOT met'}"
    )
    print(
        f"sign time, cached key, median of 31 (best of two interleaved rounds): {figures['now_us']} us; "
        f"big-integer code {figures['bigint_us']} us; ratio old/new "
        f"{figures['bigint_us'] / figures['now_us']:.2f} (goal >= 1: no worse)"
    )
    print(
        f"ROMFS (vfs.VfsRom image of the same build, its {image_bytes} bytes in the heap subtracted): "
        f"steady heap {rom_steady} bytes (goal <= 40960: {'met' if rom_steady <= 40960 else 'NOT met'}), "
        f"start-up peak about {rom_peak // 1024} KB (to 4 KB)"
    )
    print(f"webassembly port (npm, 32-bit), boot imports: {wasm_boot_imports(work)}")
    if args.baseline:
        print(f"the same, baseline {args.baseline}: {wasm_boot_imports(work, args.baseline)}")


if __name__ == "__main__":
    main()
