"""The "receipts" delivery rule of a destination (docs/device-api.md, "Delivery").

A message leaves the FIFO only when a receipt signed with the destination's receipt key covers its
(boot, seq), i.e. once the agent behind the broker has committed it. Until then it stays where it
is (RAM, or the flash ring once RAM is full), up to RECEIPT_WINDOW sent ahead of the first one not
covered; after a reconnect, or RESEND_MS without a receipt, everything not covered is sent again
from the head. A broker that crashes with messages it acknowledged therefore loses nothing: they
go again. Loaded only when a destination has a receipt key.
"""

import time

from fp import ed25519, ids
from fp.destinations import Destination
from fp.errors import ProtocolError
from fp.receipts import Ranges, check_receipt, parse_receipt
from fp.runtime import log

# messages sent ahead of the first one not covered by a receipt. The agent sends a receipt per
# RECEIPT_EVERY (32) readings or per second, so 64 keep the link busy meanwhile; and it stays far
# below the recipient's replay window (1024), so what is sent again is never refused.
RECEIPT_WINDOW = 64
# messages held in RAM while they wait for their receipt; beyond, put() spills them to the flash
# ring and the window goes on from there. 16 signed readings are ~4 KB of heap on a 32-bit board,
# where RECEIPT_WINDOW + the PUBACK rule's 8 (72) were up to ~19 KB whenever receipts lagged: more than the
# rest of the device's runtime state. The cost: flash writes when more than 16 wait (the agent
# sends a receipt per 32 readings or per second).
RECEIPT_RAM_SLOTS = 2 * Destination.ram_slots
RESEND_MS = 2000  # no receipt for this long while messages wait: send them again from the head
COVERED_RANGES = 8  # receipt ranges kept to skip covered messages in the flash ring


class ReceiptedDestination(Destination):
    """A destination whose messages leave the FIFO when its agent's signed receipt covers them."""

    delivery = "receipts"
    ram_slots = RECEIPT_RAM_SLOTS

    def __init__(self, name, broker, client, ring, device_id, receipt_key):
        super().__init__(name, broker, client, ring, device_id)
        self.receipt_key = receipt_key
        self.receipt_id = ids.id_from_public_key(receipt_key)
        self.covered = Ranges(COVERED_RANGES)
        self.receipt_counter = 0  # the highest accepted; RAM only (see docs/security.md)
        self.receipts = 0
        self.receipts_refused = 0
        self.resent = 0
        self.ram_sent = 0  # ram[:ram_sent] were sent and wait for a receipt
        self.cursor = 0  # the next ring record to send (ring records below it wait)
        self.rewound_for = -1  # the connection on which sending restarted from the head
        self.progress_ms = time.ticks_ms()

    def spill(self):
        if self.ram:
            # those already sent keep waiting for their receipt there, not sent again at once
            self.cursor = self.ring.end + self.ram_sent
            self.ram_sent = 0
        super().spill()

    def on_receipt(self, data):
        """Take a receipt: drop what it covers; refuse (and count) any that does not verify."""
        try:
            receipt = parse_receipt(data)
            check_receipt(
                receipt,
                self.receipt_key,
                self.receipt_id,
                self.device_id,
                self.receipt_counter,
                ed25519.verify,
            )
        except ProtocolError as error:
            self.receipts_refused += 1
            log("destination %s: receipt refused: %s" % (self.name, error))
            return
        self.receipt_counter = receipt.counter
        self.receipts += 1
        head = (self.ram[0][1] if self.ram else None, self.ring.head)
        for boot, first, last in receipt.ranges:
            self.covered.add(boot, first, last)
        ram = self.ram
        index = 0
        while index < len(ram):
            if self._is_covered(ram[index][1]):
                self._delivered(*ram.pop(index))
                if index < self.ram_sent:
                    self.ram_sent -= 1
            else:
                index += 1
        self._trim_ring()
        if head != (self.ram[0][1] if self.ram else None, self.ring.head):
            # the oldest waiting message is covered: the wait of the next one starts now. Only
            # then: receipts for later messages must not hide one the broker lost (RESEND_MS)
            self.progress_ms = time.ticks_ms()
        self.wake.set()

    def _is_covered(self, payload):
        counter = self._counter(payload)
        return counter is None or self.covered.covers(counter[0], counter[1])

    def _trim_ring(self):
        """Pop the covered messages at the head of the flash ring; return the head's boot."""
        ring = self.ring
        while True:
            item = ring.peek()
            if item is None:
                return None
            counter = self._counter(item[1])
            if counter is not None and not self.covered.covers(counter[0], counter[1]):
                return counter[0]
            self._delivered(*item)
            ring.pop()

    def _rewind(self):
        """Send again, from the head, everything no receipt covers yet."""
        if self.ram_sent or self.cursor > self.ring.head:
            self.resent += 1
        self.ram_sent = 0
        self.cursor = self.ring.head
        self.progress_ms = time.ticks_ms()

    def _next(self):
        """The next message to send under the receipts rule, or None to wait.

        Nothing of a later boot is sent while one of an earlier boot waits for its receipt: a
        recipient refuses an older boot once it has seen a newer one (the replay rule), so the
        earlier message, sent again, could never be stored.
        """
        connection = self.client.connects
        waiting = self.ram_sent or self.cursor > self.ring.head
        if self.rewound_for != connection or (
            waiting and time.ticks_diff(time.ticks_ms(), self.progress_ms) > RESEND_MS
        ):
            self.rewound_for = connection
            self._rewind()
        if not self.ring.pending:
            index = self.ram_sent
            if index >= len(self.ram) or index >= RECEIPT_WINDOW:
                return None
            item = self.ram[index]
            if index:
                first, this = self._counter(self.ram[0][1]), self._counter(item[1])
                if first and this and first[0] != this[0]:
                    return None
            return item
        ring = self.ring
        head_boot = self._trim_ring()
        if self.cursor < ring.head:
            self.cursor = ring.head
        while self.cursor < ring.end and self.cursor - ring.head < RECEIPT_WINDOW:
            item = ring.read(self.cursor)
            counter = self._counter(item[1]) if item else None
            if counter is None or self.covered.covers(counter[0], counter[1]):
                self.cursor += 1  # torn, overwritten, or covered already: nothing to send
                continue
            if counter[0] != head_boot and self.cursor > ring.head:
                return None
            return item
        return None

    def _sent(self, item):
        """A message of the receipts rule was acknowledged by the broker: it now waits for its receipt."""
        if not self.ram_sent and self.cursor <= self.ring.head:
            self.progress_ms = time.ticks_ms()  # the wait for a receipt starts now
        if self.ring.pending:
            if self.cursor < self.ring.end:
                self.cursor += 1
        elif self.ram_sent < len(self.ram) and self.ram[self.ram_sent] is item:
            self.ram_sent += 1
        # else a receipt covered it meanwhile, or the link dropped and spill() moved it
