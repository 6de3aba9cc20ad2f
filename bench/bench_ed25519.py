"""Ed25519 and SHA-512 on MicroPython: optimised firmware code against the RFC 8032 baseline.

Run: micropython bench/bench_ed25519.py   (or bench/bench_ed25519_run.py for the libsodium ratio)
Prints one `name value unit` line per figure, then a summary.
"""

import gc
import sys
import time

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
for _path in (_here + "/../firmware", _here):
    if _path not in sys.path:
        sys.path.append(_path)

import ed25519_baseline  # noqa: E402

from fp import ed25519  # noqa: E402
from fp import sha512 as sha512_module  # noqa: E402
from fp.sha512 import sha512  # noqa: E402

ROUNDS_FAST = 31
ROUNDS_SLOW = 5
SEED = bytes(range(32))
MESSAGE = bytes(140)  # about the Sig_structure of a one-value reading


def median_us(function, rounds):
    samples = []
    for _ in range(rounds):
        start = time.ticks_us()
        function()
        samples.append(time.ticks_diff(time.ticks_us(), start))
    samples.sort()
    return samples[len(samples) // 2]


def heap_allocated(function):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    function()
    after = gc.mem_alloc()
    gc.enable()
    return after - before


def main():
    gc.collect()
    before = gc.mem_alloc()
    table = ed25519.load_table()
    gc.collect()
    table_resident = gc.mem_alloc() - before
    key = ed25519.SigningKey(SEED)
    signature = key.sign(MESSAGE)
    assert signature == ed25519_baseline.sign(SEED, MESSAGE), "baseline and optimised disagree"

    figures = {}
    figures["sign_us"] = median_us(lambda: key.sign(MESSAGE), ROUNDS_FAST)
    figures["sign_oneshot_us"] = median_us(lambda: ed25519.SigningKey(SEED).sign(MESSAGE), ROUNDS_FAST)
    figures["verify_us"] = median_us(lambda: ed25519.verify(key.public, MESSAGE, signature), ROUNDS_FAST)
    figures["baseline_sign_us"] = median_us(lambda: ed25519_baseline.sign(SEED, MESSAGE), ROUNDS_SLOW)
    figures["baseline_verify_us"] = median_us(
        lambda: ed25519_baseline.verify(key.public, MESSAGE, signature), ROUNDS_SLOW
    )
    blocks = bytes(128 * 64)
    figures["sha512_block_us"] = median_us(lambda: sha512(blocks), ROUNDS_FAST) / 64
    figures["sign_heap_bytes"] = heap_allocated(lambda: key.sign(MESSAGE))
    figures["table_bytes"] = len(table)
    figures["table_resident_bytes"] = table_resident

    for name in sorted(figures):
        print("%s %s" % (name, figures[name]))
    print(
        "ratio_sign_baseline_over_optimised %.1f" % (figures["baseline_sign_us"] / figures["sign_oneshot_us"])
    )
    print("ratio_sign_baseline_over_cached_key %.1f" % (figures["baseline_sign_us"] / figures["sign_us"]))
    print(
        "ratio_verify_baseline_over_optimised %.1f" % (figures["baseline_verify_us"] / figures["verify_us"])
    )
    print("sha512_viper %s" % sha512_module.HAS_VIPER)


main()
