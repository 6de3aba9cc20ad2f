"""Sets of (boot, seq) as merged ranges: what an agent committed, what a receipt covers.

Both sides use it: the agent gathers the counters it committed for a device into the ranges of
its next receipt; the device keeps the ranges of the receipts it accepted and asks whether a
message it still holds is covered. A device counts each boot's seq up from 0 and an agent
commits them mostly in order, so a long run of readings is one range, and the usual set is one
or two ranges long.

A receipt's parse and checks are here too (the host's fp.messages re-exports them): a device loads
them with fp.receipted, for a destination that takes receipts, and never for a command.
"""

from fp import cbor, const
from fp.device_messages import AUD, CTI, IAT, ISS, U32
from fp.errors import ProtocolError
from fp.inbound import Sign1, _addressed, _int_or_none, verify_sign1

MAX_RANGES = 16  # (boot, first, last) ranges in one receipt: 16 of the widest fit 512 bytes
# refusal reasons no module a board keeps names, as const(): not names in its pool (fp.inbound)
_NOT_OWNER = const("not-owner")
_NOT_FOR_ME = const("not-for-me")
_REPLAY = const("replay")


class Ranges:
    """Sorted, merged, inclusive ranges [boot, first, last], at most `limit` of them.

    When one more would exceed the limit, the oldest range is forgotten (`forgotten` counts them):
    for a receipt's coverage that means a message is sent again (a duplicate, acknowledged as
    such), never that one is lost.
    """

    def __init__(self, limit: int = 16):
        self.items: "list[list[int]]" = []
        self.limit = limit
        self.count = 0  # (boot, seq) pairs added, duplicates included
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self.items)

    def clear(self) -> None:
        self.items = []
        self.count = 0

    def add(self, boot: int, first: int, last: "int | None" = None) -> None:
        """Add boot's seqs first..last (inclusive; last defaults to first)."""
        if last is None:
            last = first
        self.count += last - first + 1
        items = self.items
        if items:  # the usual case: the next seqs of the newest range
            top = items[-1]
            if top[0] == boot and top[1] <= first <= top[2] + 1:
                if last > top[2]:
                    top[2] = last
                return
        index = len(items)
        while index and (
            items[index - 1][0] > boot or (items[index - 1][0] == boot and items[index - 1][1] > first)
        ):
            index -= 1
        items.insert(index, [boot, first, last])
        # merge with the neighbours it touches or overlaps (same boot only)
        if index and items[index - 1][0] == boot and items[index - 1][2] + 1 >= first:
            index -= 1
            items[index][2] = max(items[index][2], last)
            items.pop(index + 1)
        entry = items[index]
        while index + 1 < len(items) and items[index + 1][0] == boot and items[index + 1][1] <= entry[2] + 1:
            entry[2] = max(entry[2], items[index + 1][2])
            items.pop(index + 1)
        while len(items) > self.limit:
            items.pop(0)
            self.forgotten += 1

    def covers(self, boot: int, seq: int) -> bool:
        """True when (boot, seq) is in one of the ranges."""
        for entry in self.items:
            if entry[0] == boot and entry[1] <= seq <= entry[2]:
                return True
        return False

    def take(self, count: int) -> "list[list[int]]":
        """Remove and return the oldest `count` ranges (a receipt's worth)."""
        taken = self.items[:count]
        self.items = self.items[count:]
        return taken


class Receipt:
    """A receipt, parsed but not yet verified: `ranges` is a list of [boot, first_seq, last_seq]."""

    __slots__ = ("message", "signer_id", "device_id", "counter", "time_s", "ranges")

    def __init__(
        self,
        message: Sign1,
        signer_id: str,
        device_id: str,
        counter: int,
        time_s: "int | None",
        ranges: "list[list[int]]",
    ):
        self.message = message
        self.signer_id = signer_id
        self.device_id = device_id
        self.counter = counter
        self.time_s = time_s
        self.ranges = ranges


def _is_u32(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U32


def parse_receipt(data: bytes) -> Receipt:
    """Parse a receipt into a Receipt; raise ProtocolError if a field is missing or mistyped."""
    message, signer_id, device_id, counter = _addressed(data, "receipt")
    claims = message.claims
    for key in claims:
        if key not in (ISS, AUD, IAT, CTI):
            raise ProtocolError("malformed", "claim %r is not used in receipts" % (key,))
    ranges = cbor.decode(message.payload)
    if not isinstance(ranges, list) or not 0 < len(ranges) <= MAX_RANGES:
        raise ProtocolError("malformed", "receipt payload must be a list of 1..%d ranges" % MAX_RANGES)
    for entry in ranges:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not (_is_u32(entry[0]) and _is_u32(entry[1]) and _is_u32(entry[2]))
            or entry[1] > entry[2]
        ):
            raise ProtocolError("malformed", "a receipt range is [boot, first_seq, last_seq], first <= last")
    time_s = _int_or_none(claims.get(IAT), "iat")
    return Receipt(message, signer_id, device_id, counter, time_s, ranges)


def check_receipt(receipt, trusted_key, trusted_id, device_id, last_counter, verify):
    """Judge a parsed receipt for this device; raise ProtocolError with the refusal reason.

    `trusted_id` is id_from_public_key(trusted_key), computed once by the caller. The signature is
    checked before the address and the counter, which the sender chose.
    """
    if receipt.signer_id != trusted_id:
        raise ProtocolError(_NOT_OWNER, "receipt signed by " + receipt.signer_id)
    verify_sign1(receipt.message, trusted_key, verify)
    if receipt.device_id != device_id:
        raise ProtocolError(_NOT_FOR_ME, "receipt for " + receipt.device_id)
    if receipt.counter <= last_counter:
        raise ProtocolError(_REPLAY, "receipt %d not above %d" % (receipt.counter, last_counter))
