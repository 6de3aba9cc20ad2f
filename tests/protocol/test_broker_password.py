"""A device's broker password: the same under MicroPython and CPython, HMAC-SHA256 as the standard says."""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from fp.ids import broker_password

BROKER_PASSWORD_LABEL = b"firstparty broker password v1\x00"  # fp.ids' (a const there)

CASES = [
    (bytes(32), "127.0.0.1", 1883),
    (bytes(range(32)), "mqtt.vendor.example", 8883),
    (os.urandom(32), "192.168.1.10", 1),
    (os.urandom(32), "h" * 253, 65535),
]


def test_it_is_hmac_sha256_of_the_seed_over_the_endpoint_and_differs_per_broker():
    for seed, host, port in CASES:
        expected = hmac.new(
            seed, BROKER_PASSWORD_LABEL + f"{host}:{port}".encode(), hashlib.sha256
        ).hexdigest()
        assert broker_password(seed, host, port) == expected[:32]
    seed = os.urandom(32)
    passwords = {broker_password(seed, "192.168.1.10", 1883), broker_password(seed, "192.168.1.10", 1884)}
    passwords |= {broker_password(seed, "mqtt.vendor.example", 1883), broker_password(os.urandom(32), "x", 1)}
    assert len(passwords) == 4


def test_micropython_computes_the_same_password(micropython):
    script = (
        "import json, sys\n"
        "from fp.ids import broker_password\n"
        "cases = json.loads(sys.stdin.read())\n"
        "print(json.dumps([broker_password(bytes.fromhex(s), h, p) for s, h, p in cases]))\n"
    )
    cases = [(seed.hex(), host, port) for seed, host, port in CASES]
    result = json.loads(micropython(script, stdin=json.dumps(cases)))
    assert result == [broker_password(seed, host, port) for seed, host, port in CASES]
