"""Receipts: the agent tells each device, signed, which of its messages it has committed.

After each commit, ingest's outcomes go through `ReceiptBook.committed` (readings and acks,
stored now or already stored: a message sent again is covered too). A device's counters gather
into ranges (fp.receipts.Ranges) and leave as one signed receipt (fp.messages.encode_receipt)
when RECEIPT_EVERY of them have gathered, or RECEIPT_INTERVAL_S after the first, whichever
comes first, with QoS 0: a receipt lost on the way (or sent while the device is away) only makes
the device send those messages again, and it is covered by the next one. The device drops a message only once a receipt covers it, so a broker that dies
with messages it had acknowledged loses nothing (docs/protocol.md section 11).

The key is the agent's own (`receipt.key` in the data directory, mode 0600), not the owner's: a
receipt only ever says "stored", and the owner key stays the one key that commands devices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from fp import ids, messages, topics
from fp.receipts import Ranges
from host_agent import wire
from host_agent.owner import load_or_create_seed

RECEIPT_EVERY = 32  # counters per receipt at most (the device keeps 64 in flight: fp.receipted); one
# signature per 32 readings is about 1 us of the agent per reading (docs/benchmarks.md, "Receipts")
RECEIPT_INTERVAL_S = 1.0  # and at most this long after the first committed one
RECEIPT_KINDS = ("reading", "ack")  # what a device queues (fp.destinations.Destination); status is retained


class Taken(NamedTuple):
    """A device's receipt, counted but not signed yet (ReceiptBook.take, then ReceiptBook.sign)."""

    device_id: str
    counter: int
    ranges: list[list[int]]


@dataclass(slots=True)
class Pending:
    ranges: Ranges = field(default_factory=lambda: Ranges(1 << 30))  # bounded by RECEIPT_EVERY
    since_s: float = 0.0


class ReceiptBook:
    """Committed (boot, seq) per device, not yet receipted; signs them into receipts in batches."""

    def __init__(self, key_path: Path, every: int = RECEIPT_EVERY, interval_s: float = RECEIPT_INTERVAL_S):
        seed = load_or_create_seed(Path(key_path))
        self.sign_bytes = wire.nacl_signer(seed)
        self.public = wire.nacl_public_key(seed)
        self.key_id = ids.id_from_public_key(self.public)
        self.every = every
        self.interval_s = interval_s
        self.pending: dict[str, Pending] = {}
        self.counter = 0
        self.sent = 0

    def committed(self, device_id: str, boot: int, seq: int, now_s: float) -> bool:
        """Note one committed counter; True when the device's receipt is due at once."""
        pending = self.pending.get(device_id)
        if pending is None:
            pending = self.pending[device_id] = Pending(since_s=now_s)
        pending.ranges.add(boot, seq)
        return pending.ranges.count >= self.every or len(pending.ranges) >= messages.MAX_RANGES

    def take(self, now_s: float, device_ids: list[str] | None = None) -> list[Taken]:
        """Each device that is due (or each of `device_ids`), forgotten here, with the counter its
        receipt will carry: cheap, for the event loop, which keeps the counters in order."""
        out: list[Taken] = []
        for device_id in list(self.pending) if device_ids is None else device_ids:
            pending = self.pending.get(device_id)
            if pending is None:
                continue
            is_full = pending.ranges.count >= self.every or len(pending.ranges) >= messages.MAX_RANGES
            if device_ids is None and not is_full and now_s - pending.since_s < self.interval_s:
                continue
            del self.pending[device_id]
            out.append(Taken(device_id, self._next_counter(), pending.ranges.items[: messages.MAX_RANGES]))
        return out

    def sign(self, taken: list[Taken]) -> list[tuple[str, bytes]]:
        """(topic, receipt) for each of `taken`, in its order: the signatures, for a worker thread."""
        created_s = int(time.time())
        return [
            (
                topics.topic(t.device_id, "receipt"),
                messages.encode_receipt(
                    self.sign_bytes, self.public, t.device_id, t.counter, t.ranges, created_s, self.key_id
                ),
            )
            for t in taken
        ]

    def receipt(self, device_id: str, ranges: list[list[int]]) -> bytes:
        """Sign one receipt (ranges: at most MAX_RANGES) with the next counter."""
        [(_, data)] = self.sign([Taken(device_id, self._next_counter(), ranges[: messages.MAX_RANGES])])
        return data

    def _next_counter(self) -> int:
        # milliseconds since 1970, or one more than the last: it grows across restarts too
        self.counter = max(self.counter + 1, int(time.time() * 1000))
        self.sent += 1
        return self.counter
