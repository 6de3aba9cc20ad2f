"""Crash-loop detection: a boot record in flash counting the boots in a row that did not get stable.

Every boot counts itself as unstable first thing (one flash write), and the application marks it
stable (a second write) once its pipeline has delivered a message to a broker, or once it has
been up `window_s`: a boot that lived that long cannot be part of `boots` resets within
`window_s`. A crash, a watchdog reset or a reset after a crash (fp.app.main) therefore leaves the
count raised, and after `boots` unstable boots in a row the next one starts in safe mode.

When the time of day is known at boot (always on the unix port; on a board only if its clock
survived the reset), unstable boots that started more than `window_s` before this one no longer
count. A power-on boot (the hardware layer can tell on an ESP32) does not count the boot it
ended: a power cut is not a crash.

A stable boot does not confirm a release on probation (fp.slots): only its first delivered reading
does (fp.ota.confirm); a trial that never delivers one rolls back after fp.slots._MAX_TRIES boots.

Safe mode lasts until the owner's `reboot` command (which marks the boot stable, so the next one
is normal) or until someone deletes `boot.hist` at the REPL; a power cycle does not end it.
"""

import time

from fp import const, storage

HISTORY_FILE = "boot.hist"
_MAX_COUNT = const(255)
SAFE_MODE = "safe-mode"  # the mode the status message and get-info report


class BootHistory:
    """The boot record: how many boots in a row were unstable, and when the first of them began."""

    def __init__(self, boots, window_s, path=HISTORY_FILE):
        self.boots = boots
        self.window_s = window_s
        self.path = path
        self.unstable = 0  # this boot included, once start() has run
        self.is_safe = False
        self.is_stable = False

    def start(self, now_s, is_power_on=False):
        """Record this boot as unstable; return True when it must run in safe mode."""
        record = storage.load_json(self.path, None)
        unstable, first_s = 0, None
        if isinstance(record, dict):
            count, since = record.get("unstable"), record.get("first_s")
            if isinstance(count, int) and 0 <= count <= _MAX_COUNT:
                unstable = count
            if isinstance(since, int):
                first_s = since
        if is_power_on and unstable:
            unstable -= 1
        if (
            unstable <= self.boots  # safe mode is left by a command or at the REPL, not by waiting
            and now_s is not None
            and first_s is not None
            and not 0 <= now_s - first_s <= self.window_s
        ):
            unstable, first_s = 0, None
        if not unstable or first_s is None:
            first_s = None if now_s is None else int(now_s)
        self.unstable = min(unstable + 1, _MAX_COUNT)
        storage.save_json(self.path, {"unstable": self.unstable, "first_s": first_s})
        self.is_safe = self.unstable > self.boots
        return self.is_safe

    def mark_stable(self):
        """Clear the count: this boot worked (or the owner asked for a reboot)."""
        self.is_stable = True
        self.unstable = 0
        storage.save_json(self.path, {"unstable": 0, "first_s": None})

    def check_stable(self, has_delivered, started_ms):
        """Mark this boot stable once a broker has taken a message from it, or after the window.

        Return True when this call marked it."""
        if self.is_safe or self.is_stable:
            return False
        if has_delivered or time.ticks_diff(time.ticks_ms(), started_ms) >= 1000 * self.window_s:
            self.mark_stable()
            return True
        return False
