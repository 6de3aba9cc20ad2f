"""Sets of (boot, seq) as merged ranges: what an agent committed, what a receipt covers.

Both sides use it: the agent gathers the counters it committed for a device into the ranges of
its next receipt; the device keeps the ranges of the receipts it accepted and asks whether a
message it still holds is covered. A device counts each boot's seq up from 0 and an agent
commits them mostly in order, so a long run of readings is one range, and the usual set is one
or two ranges long.
"""


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
