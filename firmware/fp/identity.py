"""The device's identity and counters: its key (from the seed), its id, the (boot, seq) of every
message it signs, its owner and the owner's last command counter (its card: fp.device_card).

`card_at_flash` is what `firstparty flash` runs on the board to read the card the device will
announce: the same function the device signs its card with (fp.device_card.card), from the same
flash files, checked as the device checks them at boot.
"""

from fp import device_messages, ed25519, ids, storage
from fp.runtime import unload


def _next_boot():
    """The boot counter's next number (fp.boot_counter, loaded for it and dropped after)."""
    from fp import boot_counter

    try:
        return boot_counter.next_boot()
    finally:
        unload("boot_counter")


class Identity:
    """Key, id, counters and owner of this device; every change of them is saved to flash first."""

    def __init__(self, board_name, owner_key, last_counter):
        self.seed = storage.load_seed()  # also the key of the device's broker passwords
        self.key = ed25519.SigningKey(self.seed)
        self.device_id = ids.id_from_public_key(self.key.public)
        self.board_name = board_name
        self.boot = _next_boot()
        self.seq = 0
        self.owner_key = owner_key
        self.last_counter = last_counter  # the owner's last accepted command counter

    def next_counter(self):
        """The (boot, seq) of the next signed message: never one used before, even across resets."""
        if self.seq > device_messages.U32:
            self.boot = _next_boot()
            self.seq = 0
        seq = self.seq
        self.seq += 1
        return self.boot, seq

    def accept_counter(self, counter):
        """Record an applied owner command's counter: a replay of it, or of an older one, is refused."""
        self.last_counter = counter
        storage.save_json(storage.COUNTER_FILE, counter)

    def set_owner(self, key):
        """A claim or a hand-over: the new owner's counters start again from 0."""
        self.owner_key = key
        self.last_counter = 0
        storage.save_json(storage.OWNER_FILE, key.hex())
        storage.save_json(storage.COUNTER_FILE, 0)


def card_at_flash():
    """The card the device will announce, from its flash files (run on the board at flash time).

    The board name and the owner come through the device's own boot check (fp.checked), which
    leaves the checked copy as it does at a first boot: the device's first boot then loads no
    checks. Files the device cannot run with end it here with the boot's line. The time is left
    out, as the board may not know it yet.
    """
    from fp import checked, runtime

    try:
        board, _, owner, _, _ = checked.load(runtime.log)
    finally:
        runtime.unload("checked")
    from fp import device_card

    return device_card.card(ed25519.SigningKey(storage.load_seed()), board["name"], owner, None)
