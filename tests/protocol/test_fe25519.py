"""fp.fe25519 (viper field arithmetic over 16-bit limbs) under MicroPython, against Python integers."""

from __future__ import annotations

import json
import random

P = 2**255 - 19
# values at every edge of the limb representation: 0, p and its neighbours, all-ones limbs, 2^256 - 1
EDGES = [0, 1, 2, 19, 38, P - 1, P, P + 1, P + 18, 2**255 - 1, 2**255, 2**256 - 38, 2**256 - 1, 2**16 - 1]

SCRIPT = """
import sys, json
from fp import fe25519 as F
M = F.MEMORY
def put(register, value):
    offset = 32 * register
    M[offset : offset + 32] = value.to_bytes(32, "little")
def get(register):
    offset = 32 * register
    return int.from_bytes(bytes(M[offset : offset + 32]), "little")
out = []
for a, b in json.loads(sys.stdin.read()):
    row = []
    for op in ("mul", "sqr", "add", "sub", "mul_in_place"):
        put(0, a)
        put(1, b)
        if op == "sqr":
            F.sqr(M, 32, 0, 1)
        elif op == "mul_in_place":
            F.mul(M, 0, 0, 16)
            M[64:96] = M[0:32]
        else:
            getattr(F, op)(M, 32, 0, 16)
        loose = get(2)
        F.canonical(M, 32)
        row.append([loose, get(2)])
    put(0, a)
    F.sqr(M, 48, 0, 5)
    row.append([get(3), get(3)])
    out.append(row)
print(json.dumps(out))
"""


def test_field_operations_match_python_integers_at_the_edges_and_on_random_values(micropython):
    rng = random.Random(255)
    pairs = [[a, b] for a in EDGES for b in EDGES] + [
        [rng.getrandbits(256), rng.getrandbits(256)] for _ in range(300)
    ]
    result = json.loads(micropython(SCRIPT, stdin=json.dumps(pairs), heapsize="8M"))
    for (a, b), row in zip(pairs, result, strict=True):
        wanted = [a * b, a * a, a + b, a - b, a * b, pow(a, 32, P)]
        for name, (loose, canonical), want in zip(
            ("mul", "sqr", "add", "sub", "mul_in_place", "sqr5"), row, wanted, strict=True
        ):
            assert loose < 2**256 and loose % P == want % P, (name, a, b)
            if name != "sqr5":
                assert canonical == want % P, (name, a, b)


def test_a_signature_allocates_at_most_16_kb_and_matches_the_big_integer_path(micropython):
    script = """
import gc
from fp import ed25519
key = ed25519.SigningKey(bytes(range(32)))
message = bytes(140)
fast = key.sign(message)
gc.collect()
gc.disable()
before = gc.mem_alloc()
key.sign(message)
allocated = gc.mem_alloc() - before
gc.enable()
viper = ed25519.fe25519
ed25519.fe25519 = None  # the big-integer arithmetic, as CPython and the webassembly port run it
slow = key.sign(message)
ed25519.fe25519 = viper
print(allocated, fast == slow, viper is not None)
"""
    allocated, same, has_viper = micropython(script).split()
    assert has_viper == "True" and same == "True"
    assert int(allocated) <= 16 * 1024, allocated
