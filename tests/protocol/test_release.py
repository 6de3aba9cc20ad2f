"""Release manifests (fp.release): who may install what, decided alike under CPython and MicroPython."""

from __future__ import annotations

import hashlib
import json

import pytest
from nacl.signing import SigningKey

from fp import ed25519, release
from fp.errors import ProtocolError
from fp.reasons import REASONS

VENDOR = SigningKey(bytes(range(1, 33)))
OWNER = SigningKey(bytes(range(2, 34)))
STRANGER = SigningKey(bytes(range(3, 35)))
FILES = {"main.py": b"from fp import app\n", "fp/app.mpy": bytes(range(256)) * 9}
ARCH = "xtensawin"
RUNNING = ((0, 1, 0), 5)  # version, anti-rollback counter


def public(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def signer(key: SigningKey):
    return lambda data: key.sign(data).signature


def manifest(key=VENDOR, arch=ARCH, counter=6, min_from=(0, 1, 0), files=None) -> bytes:
    files = FILES if files is None else files
    listed = [(path, len(data), hashlib.sha256(data).digest()) for path, data in files.items()]
    return release.encode_release(signer(key), public(key), (0, 2, 0), arch, counter, min_from, listed)


def approval(data: bytes, key=OWNER) -> bytes:
    return release.encode_approval(signer(key), public(key), data)


def cases() -> list[tuple[str, bytes, bytes | None, bytes | None, str]]:
    """(name, manifest, approval, owner key, the outcome wanted: who vouches, or the reason)."""
    vendor_release = manifest()
    owner = public(OWNER)
    return [
        (
            "vendor release approved by the owner",
            vendor_release,
            approval(vendor_release),
            owner,
            "vendor+owner",
        ),
        ("owner alone", manifest(OWNER), None, owner, "owner"),
        ("unclaimed device follows the vendor", vendor_release, None, None, "vendor"),
        ("vendor without the owner's approval", vendor_release, None, owner, "not-approved"),
        ("approval of another release", vendor_release, approval(manifest(counter=7)), owner, "not-approved"),
        (
            "approval signed by a stranger",
            vendor_release,
            approval(vendor_release, STRANGER),
            owner,
            "bad-signature",
        ),
        ("release approved as a manifest", vendor_release, vendor_release, owner, "wrong-kind"),
        ("unknown key", manifest(STRANGER), None, owner, "unknown-key"),
        ("owner key of an unclaimed device is not trusted", manifest(OWNER), None, None, "unknown-key"),
        ("wrong architecture", manifest(arch="rv32imc"), None, None, "wrong-arch"),
        ("older anti-rollback counter", manifest(counter=4), None, None, "rollback"),
        (
            "older counter even approved",
            manifest(counter=4),
            approval(manifest(counter=4)),
            owner,
            "rollback",
        ),
        ("owner-signed downgrade", manifest(OWNER, counter=1), None, owner, "owner"),
        ("running version too old", manifest(min_from=(0, 1, 5)), None, None, "too-old"),
        (
            "signature swapped for another's",
            vendor_release[:-64] + manifest(counter=7)[-64:],
            None,
            None,
            "bad-signature",
        ),
        ("path leaving the folder", manifest(files={"../boot.py": b"x"}), None, None, "malformed"),
        ("absolute path", manifest(files={"/main.py": b"x"}), None, None, "malformed"),
        ("an approval instead of a release", approval(vendor_release), None, owner, "wrong-kind"),
        ("not CBOR", b"\xff" * 40, None, None, "malformed"),
        ("oversized", b"\x00" * (release.MAX_MANIFEST_BYTES + 1), None, None, "oversized"),
    ]


def decide(data: bytes, approval_bytes: bytes | None, owner_key: bytes | None) -> str:
    try:
        parsed = release.parse_release(data)
        return release.check_release(
            parsed, approval_bytes, [public(VENDOR)], owner_key, ARCH, RUNNING[0], RUNNING[1], ed25519.verify
        )
    except ProtocolError as error:
        assert error.reason in REASONS
        return error.reason


@pytest.mark.parametrize("case", cases(), ids=lambda case: case[0])
def test_release_is_installed_only_by_the_rules_under_cpython(case):
    name, data, approval_bytes, owner_key, wanted = case
    assert decide(data, approval_bytes, owner_key) == wanted, name


def test_release_rules_decide_alike_under_micropython(micropython):
    script = """
import sys, json
from fp import ed25519, release
from fp.errors import ProtocolError
data = json.loads(sys.stdin.read())
vendor = bytes.fromhex(data["vendor"])
out = []
for manifest, approval, owner in data["cases"]:
    try:
        parsed = release.parse_release(bytes.fromhex(manifest))
        out.append(release.check_release(
            parsed, bytes.fromhex(approval) if approval else None, [vendor],
            bytes.fromhex(owner) if owner else None, data["arch"], (0, 1, 0), 5, ed25519.verify))
    except ProtocolError as error:
        out.append(error.reason)
print(json.dumps(out))
"""
    all_cases = cases()
    stdin = json.dumps(
        {
            "vendor": public(VENDOR).hex(),
            "arch": ARCH,
            "cases": [
                [m.hex(), a.hex() if a else None, o.hex() if o else None] for _, m, a, o, _ in all_cases
            ],
        }
    )
    outcomes = json.loads(micropython(script, stdin=stdin, heapsize="4M"))
    assert outcomes == [wanted for *_, wanted in all_cases]


def transfer_outcome(chunks: list[tuple[int, int, bytes, bytes]], finish: bool = True) -> str:
    parsed = release.parse_release(manifest())
    transfer = release.Transfer(parsed)
    try:
        for index, offset, data, digest in chunks:
            transfer.accept(index, offset, data, digest)
        if finish:
            transfer.finish()
    except ProtocolError as error:
        return error.reason
    return "complete"


def chunked(files=FILES, size=1000) -> list[tuple[int, int, bytes, bytes]]:
    out = []
    for index, data in enumerate(files.values()):
        for offset in range(0, max(len(data), 1), size):
            piece = data[offset : offset + size]
            out.append((index, offset, piece, hashlib.sha256(piece).digest()))
    return out


def test_a_whole_transfer_in_chunks_completes():
    assert transfer_outcome(chunked()) == "complete"


def test_a_chunk_that_does_not_match_its_own_hash_is_refused():
    chunks = chunked()
    index, offset, data, digest = chunks[2]
    chunks[2] = (index, offset, b"X" + data[1:], digest)
    assert transfer_outcome(chunks) == "bad-chunk"


def test_a_tampered_chunk_with_a_matching_chunk_hash_is_caught_by_the_file_hash():
    chunks = chunked()
    index, offset, data, _ = chunks[2]
    forged = b"X" + data[1:]
    chunks[2] = (index, offset, forged, hashlib.sha256(forged).digest())
    assert transfer_outcome(chunks) == "tampered"


def test_a_truncated_transfer_is_refused_at_the_end():
    assert transfer_outcome(chunked()[:-1]) == "truncated"


def test_a_chunk_out_of_order_or_repeated_is_refused():
    chunks = chunked()
    assert transfer_outcome([chunks[0], chunks[2]]) == "out-of-order"
    assert transfer_outcome([chunks[0], chunks[1], chunks[1]]) == "out-of-order"


def test_bytes_past_a_files_size_are_refused():
    chunks = chunked()
    index, offset, data, _ = chunks[0]
    longer = data + b"more"
    assert transfer_outcome([(index, offset, longer, hashlib.sha256(longer).digest())]) == "oversized"


def test_transfer_checks_decide_alike_under_micropython(micropython):
    whole = chunked()
    forged = b"X" + whole[2][2][1:]
    scenarios = {
        "complete": whole,
        "tampered": [
            *whole[:2],
            (whole[2][0], whole[2][1], forged, hashlib.sha256(forged).digest()),
            *whole[3:],
        ],
        "truncated": whole[:-1],
        "bad-chunk": [*whole[:2], (whole[2][0], whole[2][1], forged, whole[2][3]), *whole[3:]],
    }
    script = """
import sys, json
from fp import release
from fp.errors import ProtocolError
data = json.loads(sys.stdin.read())
parsed = release.parse_release(bytes.fromhex(data["manifest"]))
out = {}
for name, chunks in data["scenarios"].items():
    transfer = release.Transfer(parsed)
    try:
        for index, offset, piece, digest in chunks:
            transfer.accept(index, offset, bytes.fromhex(piece), bytes.fromhex(digest))
        transfer.finish()
        out[name] = "complete"
    except ProtocolError as error:
        out[name] = error.reason
print(json.dumps(out))
"""
    stdin = json.dumps(
        {
            "manifest": manifest().hex(),
            "scenarios": {
                name: [[i, o, d.hex(), h.hex()] for i, o, d, h in chunks]
                for name, chunks in scenarios.items()
            },
        }
    )
    outcomes = json.loads(micropython(script, stdin=stdin, heapsize="4M"))
    assert outcomes == {name: name for name in scenarios}
