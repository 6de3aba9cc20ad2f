"""The install of an update into the inactive slot (fp.slots), and its confirmation: loaded only
with an update, or once a trial release delivered its first reading (fp.ota).

A checked release (fp.release) is written chunk by chunk into the slot folder not in use, then
made the trial release by one atomic write of `slot.json` (fp.slots.save_state).
"""

import os

from fp import slots, storage


def inactive_slot(state):
    """The slot folder an update may be written into: neither the active release nor the trial."""
    return "slot_b" if state["active"] == "slot_a" else "slot_a"


def staged(state, slot):
    """The state that makes the release in `slot` the trial: the atomic switch."""
    return {"active": state["active"], "trial": slot, "tries": 0}


def confirmed(state):
    """The state once the trial release has proved itself (its first delivered reading)."""
    if state["trial"] is None:
        return state
    return {"active": state["trial"], "trial": None, "tries": 0}


def confirm_trial():
    """The running trial release delivered its first reading: make it the active one (fp.ota.confirm)."""
    state = slots.load_state()
    if state["trial"] is not None:
        slots.save_state(confirmed(state))


def _makedirs(path):
    built = ""
    for part in path.split("/"):
        built = built + "/" + part if built else part
        try:
            os.mkdir(built)
        except OSError:
            pass  # exists


def _remove_tree(path):
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for name in entries:
        child = path + "/" + name
        try:
            os.remove(child)
        except OSError:
            _remove_tree(child)
    os.rmdir(path)


class Installer:
    """Writes a checked release (fp.release) into the inactive slot, chunk by chunk, and switches.

    `step(name)` is called before every write to flash (tests cut the power there)."""

    def __init__(self, release_module, release, manifest_bytes, state, step=None):
        self.release = release
        self.manifest_bytes = manifest_bytes
        self.state = state
        self.slot = inactive_slot(state)
        self.transfer = release_module.Transfer(release)
        self.step = step or (lambda name: None)

    def begin(self):
        self.step("clear-slot")
        _remove_tree(self.slot)
        _makedirs(self.slot)
        self.step("write-manifest")
        storage.write_atomic(self.slot + "/" + slots.MANIFEST_FILE, self.manifest_bytes)

    def chunk(self, index, offset, data, digest):
        """Check one chunk (fp.release.Transfer.accept) and append it to its file."""
        self.transfer.accept(index, offset, data, digest)
        path = self.slot + "/" + self.release.files[index][0]
        if offset == 0 and "/" in path:
            _makedirs(path.rsplit("/", 1)[0])
        self.step("write-chunk %d@%d" % (index, offset))
        with open(path, "wb" if offset == 0 else "ab") as f:
            f.write(data)

    def commit(self):
        """Switch: make the written release the trial; raise ProtocolError unless it arrived whole."""
        self.transfer.finish()
        state = staged(self.state, self.slot)
        self.step("switch")
        slots.save_state(state)
        return state
