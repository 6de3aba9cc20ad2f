"""The audit log's hash chain: each entry commits to the one before it (pure functions).

entry_hash = SHA-256(prev_hash || seq || at || kind || canonical JSON of data). Editing, inserting
or deleting any entry breaks every hash after it; `first_bad` names the first entry that fails.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

GENESIS = "0" * 64


def entry_hash(prev_hash: str, seq: int, at: float, kind: str, data: str) -> str:
    """Return the hex hash of one entry given the previous entry's hash."""
    text = json.dumps([prev_hash, seq, round(at, 6), kind, data], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def first_bad(entries: Iterable[tuple[int, float, str, str, str, str]]) -> tuple[int, str] | None:
    """Check (seq, at, kind, data, prev, hash) rows in order; return (seq, why) of the first bad one."""
    previous = GENESIS
    expected_seq = 1
    for seq, at, kind, data, prev, digest in entries:
        if seq != expected_seq:
            return seq, f"expected entry {expected_seq} here (an entry was deleted or inserted)"
        if prev != previous:
            return seq, "does not commit to the entry before it"
        if entry_hash(prev, seq, at, kind, data) != digest:
            return seq, "its content was changed after it was written"
        previous = digest
        expected_seq += 1
    return None
