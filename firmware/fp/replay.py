"""The replay rule for device messages: each (boot, seq) at most once, never an older boot.

A sliding window (as in DTLS anti-replay, RFC 6347 section 4.1.2.6) tolerates the reordering that
QoS 1 redelivery and store-and-forward drains cause: a genuine message that arrives late is still
accepted as long as it is within WINDOW of the highest seq seen in the current boot.
"""

from fp.errors import ProtocolError

WINDOW = 1024
_MASK = (1 << WINDOW) - 1


class ReplayWindow:
    """Anti-replay state of one device; `state()` and the constructor persist and restore it."""

    def __init__(self, boot: int = -1, top: int = -1, seen: int = 0):
        self.boot = boot
        self.top = top
        self.seen = seen  # bit i set: seq (top - i) of this boot has been accepted

    def check(self, boot: int, seq: int) -> None:
        """Raise ProtocolError('replay') if (boot, seq) must be refused; change nothing."""
        if boot < self.boot:
            raise ProtocolError("replay", "boot %d is older than boot %d" % (boot, self.boot))
        if boot > self.boot or seq > self.top:
            return
        age = self.top - seq
        if age >= WINDOW:
            raise ProtocolError("replay", "seq %d is older than the window (top %d)" % (seq, self.top))
        if (self.seen >> age) & 1:
            raise ProtocolError("replay", "boot %d seq %d already accepted" % (boot, seq))

    def accept(self, boot: int, seq: int) -> None:
        """Check (boot, seq) and record it as seen."""
        self.check(boot, seq)
        if boot > self.boot:
            self.boot = boot
            self.top = seq
            self.seen = 1
        elif seq > self.top:
            shift = seq - self.top
            self.seen = ((self.seen << shift) | 1) & _MASK if shift < WINDOW else 1
            self.top = seq
        else:
            self.seen |= 1 << (self.top - seq)

    def state(self) -> tuple[int, int, int]:
        """Return (boot, top, seen) for storage."""
        return self.boot, self.top, self.seen
