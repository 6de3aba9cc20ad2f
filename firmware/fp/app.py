"""The device application's entry point: check the flash files, pick the hardware layer, run.

Files in the flash root: `board.json` (the board's data file), `provision.json` (written at flash
time: vendor endpoint, Wi-Fi, optional owner key, HTTP port, safe-mode settings), `config.json`
(changed only by owner commands: destinations and intervals), `key.seed`, `boot.cnt`, `boot.hist`,
`owner.key`, `cmd.cnt`, `checked.json`. All three JSON files are checked (fp.settings, dropped
after) at the first boot and whenever they changed; later boots use the check's result, kept in
`checked.json` (fp.checked). A crash loop starts the device in safe mode (fp.safemode). The
device itself: fp.device.
Reference: docs/device-api.md.
"""

import asyncio
import io
import sys

from fp import ed25519, safemode
from fp.runtime import log, unload


def load_hal(board, provision):
    """The hardware layer of the board's port: one class, `Board`, in each (a name each would be
    one more in the board's name pool)."""
    if board.get("port") == "esp32":
        from fp.hal_esp32 import Board

        return Board(board, provision)
    from fp.hal_sim import Board

    return Board(board)


def crash_line(error):
    """Return the traceback of `error` on one line, as the log keeps it.

    A board's fp modules are compiled without line numbers (mpy-cross -O3), and MicroPython then
    says "line 1" for each of their frames: left out, the frame names the module and function.
    """
    buffer = io.StringIO()
    sys.print_exception(error, buffer)  # pyright: ignore[reportArgumentType] (MicroPython takes any stream)
    text = buffer.getvalue()  # pyright: ignore[reportAttributeAccessIssue] (the stubs' StringIO has no getvalue)
    lines = []
    for line in text.strip().split("\n"):
        line = line.strip()
        # line 1 of an fp module is its docstring: no frame is ever there
        lines.append(line.replace(", line 1,", ",") if line.startswith('File "fp.') else line)
    return " | ".join(lines[-1:] + lines[:-1])  # what happened first, then where


def load_settings():
    """Return the checked flash files as a Settings, or exit with one line when the device cannot run.

    fp.checked, loaded for this and dropped after, reads the copy the last check left, or runs the
    full check (fp.settings) when the files or the firmware changed since.
    """
    from fp import checked

    try:
        return Settings(*checked.load(log))
    finally:
        unload("checked")


class Settings:
    """The flash files as the boot check left them (fp.settings, or its copy), for fp.device.Device."""

    def __init__(self, board, provision, owner_key, last_counter, config):
        self.board = board
        self.provision = provision
        self.owner_key = owner_key  # the owner's public key (bytes), or None: unclaimed
        self.last_counter = last_counter  # the owner's last accepted command counter
        self.config = config  # config.json: destinations and intervals


def build_device(hal, checked, history):
    """The device (fp.device, imported only now that the checks are gone from the heap)."""
    from fp.device import Device

    return Device(hal, checked, history)


def main():
    """Run the device; a crash is logged on one line and resets the board, except in safe mode.

    In safe mode a crash returns to the REPL instead, and so does Ctrl-C in either mode: the
    REPL stays reachable.
    """
    hal = None
    history = None
    try:
        # The Ed25519 table first: a missing or truncated one fails here, before anything starts
        # (main.py has opened it already, before importing this module; then this is a no-op).
        # It takes no heap: read in place from ROMFS, else an entry at a time from its file.
        ed25519.load_table()
        checked = load_settings()
        provision = checked.provision
        hal = load_hal(checked.board, provision)
        record = safemode.BootHistory(provision["safe_mode_boots"], provision["safe_mode_window_s"])
        record.start(hal.time_s(), hal.is_power_on_boot())
        history = record  # from here on, a crash counts toward the crash loop
        device = build_device(hal, checked, history)
        asyncio.run(device.run())
    except KeyboardInterrupt:
        log("interrupted: the REPL is yours")
        if hal:
            hal.release()
    except Exception as error:
        log("crash: " + crash_line(error))
        if hal is None or history is None or history.is_safe:
            if hal:
                hal.release()
            return
        hal.reset()  # counted: this boot never got stable


if __name__ == "__main__":
    main()
