"""A/B firmware slots: which release boots, its probation, confirmation and rollback.

The flash root holds the release the board was flashed with (the factory release); an update is written into
the slot folder not in use (`slot_a` or `slot_b`) and becomes the trial release by one atomic write
of `slot.json` (fp.storage.write_atomic: a power cut leaves the old record or the new one). A trial
release boots on probation: each boot counts a try before it runs; it is confirmed (made active)
by fp.slot_install.confirmed, or after `max_tries` boots that were not confirmed the next boot
goes back to the active release. Until the switch the active release is never touched, so a
power cut at any step boots the old release, and after it the new one on probation. The install
and the confirmation are fp.slot_install's, loaded with an update or a trial release's first
delivered reading. main.py's boot (fp.boot) loads this module only when a trial release waits or
`slot.json` needs mending: each name a module holds stays in the board's name pool (qstrs) for good.
"""

import json
import os

from fp import const, storage

STATE_FILE = "slot.json"
MANIFEST_FILE = "manifest.cose"
_FACTORY = const("")  # the flash root
_SLOTS = const(("slot_a", "slot_b"))
HISTORY_FILE = "boot.hist"  # fp.safemode's record (not imported: the boot loads this module alone)
_MAX_TRIES = const(3)  # boots a trial release gets to become stable before the active one boots again


def default_state():
    return {"active": _FACTORY, "trial": None, "tries": 0}


def parse_state(raw):
    """Return a checked state, or the default (factory release) for anything else."""
    if not isinstance(raw, dict):
        return default_state()
    active, trial, tries = raw.get("active"), raw.get("trial"), raw.get("tries")
    if active != _FACTORY and active not in _SLOTS:
        return default_state()
    if trial is not None and (trial not in _SLOTS or trial == active):
        trial = None
    if not isinstance(tries, int) or isinstance(tries, bool) or not 0 <= tries <= 255:
        tries = 0
    return {"active": active, "trial": trial, "tries": tries if trial else 0}


def choose_boot(state, max_tries):
    """Return (folder to boot, state to save before booting it, "normal"|"probation"|"rolled-back")."""
    trial = state["trial"]
    if trial is None:
        return state["active"], state, "normal"
    if state["tries"] >= max_tries:
        return state["active"], {"active": state["active"], "trial": None, "tries": 0}, "rolled-back"
    return trial, {"active": state["active"], "trial": trial, "tries": state["tries"] + 1}, "probation"


def boot_folder():
    """Choose the release this boot runs, record the try, return (folder, event) (fp.boot, when a
    trial release waits or the record needs mending)."""
    state = load_state()
    folder, chosen, event = choose_boot(state, _MAX_TRIES)
    if chosen != state:
        save_state(chosen)
    if event == "rolled-back":  # the unstable boots were the trial's: the old release starts afresh
        try:
            os.remove(HISTORY_FILE)
        except OSError:
            pass
    return folder, event


def abandon_trial():
    """The trial release could not even start: go back to the active release at once."""
    state = load_state()
    save_state({"active": state["active"], "trial": None, "tries": 0})


def load_state():
    try:
        with open(STATE_FILE) as f:
            return parse_state(json.load(f))
    except (OSError, ValueError):
        return default_state()


def save_state(state):
    storage.write_atomic(STATE_FILE, json.dumps(state).encode())
