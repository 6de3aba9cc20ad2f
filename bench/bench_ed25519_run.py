"""Run the MicroPython Ed25519 benchmark and put it beside libsodium (PyNaCl) measured in the same run.

Run: .venv/bin/python bench/bench_ed25519_run.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from nacl.signing import SigningKey

HERE = Path(__file__).resolve().parent
MESSAGE = bytes(140)


def pynacl_sign_us(rounds: int = 2001) -> float:
    key = SigningKey(bytes(range(32)))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        key.sign(MESSAGE)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def micropython_figures() -> dict[str, str]:
    micropython = Path(sys.executable).with_name("micropython")
    env = dict(os.environ, MICROPYPATH=".frozen")
    output = subprocess.run(
        [str(micropython), str(HERE / "bench_ed25519.py")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    ).stdout
    return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)


def main() -> None:
    nacl_us = pynacl_sign_us()
    figures = micropython_figures()
    for name, value in figures.items():
        print(f"micropython {name}: {value}")
    sign_us = float(figures["sign_us"])
    print(f"pynacl sign_us: {nacl_us:.1f}")
    print(f"ratio firmware sign (MicroPython) / libsodium sign: {sign_us / nacl_us:.0f}x")
    goals = [
        (
            "optimised sign >= 4x faster than the RFC 8032 baseline (one-shot)",
            float(figures["ratio_sign_baseline_over_optimised"]) >= 4,
        ),
        ("sign median <= 2500 us on the unix port", sign_us <= 2500),
        (
            "table costs nothing beyond its bytes object (<= len + 64)",
            int(figures["table_resident_bytes"]) <= int(figures["table_bytes"]) + 64,
        ),
    ]
    for goal, met in goals:
        print(f"goal {'met' if met else 'MISSED'}: {goal}")


if __name__ == "__main__":
    main()
