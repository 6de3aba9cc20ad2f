"""The boot's choice of release: main.py's start, which imports the chosen release's application.

A board with no update pending (no `slot.json`, or one without a trial release) boots its active
release with this module alone. A trial release to boot on probation, roll back or abandon, or a
record to mend, loads fp.slots, whose rules decide: each name a loaded module holds stays in the
board's name pool (qstrs) for good, and a normal boot no longer pays fp.slots' (about 20).
"""

import json
import sys

from fp import const

# The module is dropped once the application is imported (start), so its const() strs go with it,
# where a str of up to 10 characters in its code would be a name in the board's pool for good.
_STATE_FILE = const("slot.json")  # fp.slots.STATE_FILE
_RELEASES = const(("", "slot_a", "slot_b"))  # the flash root (the factory release) and fp.slots' slots
_ACTIVE = const("active")
_TRIAL = const("trial")
_NORMAL = const("normal")


def start():
    """Choose the release this boot runs and import its application: return that release's fp.app
    (main.py runs its main). A trial release that cannot even start is abandoned in this boot, and
    the active release's fp.app is returned."""
    try:
        with open(_STATE_FILE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = None  # never updated, or a record no one can read: the factory release (fp.slots)
    if state is None:
        folder, event = "", _NORMAL
    elif isinstance(state, dict) and state.get(_TRIAL) is None and state.get(_ACTIVE) in _RELEASES:
        folder, event = state[_ACTIVE], _NORMAL
    else:  # a trial release (its try counted, or rolled back), or a record fp.slots mends
        from fp import slots

        folder, event = slots.boot_folder()
    _forget_fp()  # whatever runs next is imported from the chosen release (this module included)
    if folder:
        sys.path.insert(0, folder)
        print("fp: boot release in %s (%s)" % (folder, event))
    elif event == "rolled-back":
        print("fp: the trial release never got stable: rolled back")
    try:
        return _load_app()
    except Exception as error:  # a trial release that cannot even start: back to the active one now
        if not folder:
            raise
        print("fp: release in %s cannot start (%s): rolled back" % (folder, error))
        sys.path.remove(folder)
        _forget_fp()
        from fp import slots  # from the flash root, as this module

        slots.abandon_trial()
        _forget_fp()
        return _load_app()


def _forget_fp():
    for name in [name for name in sys.modules if name == "fp" or name.startswith("fp.")]:
        del sys.modules[name]


def _load_app():
    # The Ed25519 table is opened (and its size checked) before the application is imported: a
    # trial release without a good one rolls back here. It takes no heap (fp.ed25519.load_table).
    from fp import ed25519

    ed25519.load_table()
    from fp import app

    return app
