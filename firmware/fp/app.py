"""The device application's entry point: check the flash files, pick the hardware layer, run.

Files in the flash root: `board.json` (the board's data file), `provision.json` (written at flash
time: vendor endpoint, Wi-Fi, optional owner key, HTTP port, safe-mode settings), `config.json`
(changed only by owner commands: destinations and intervals), `key.seed`, `boot.cnt`, `boot.hist`,
`owner.key`, `cmd.cnt`, `checked.json`. All three JSON files are checked (fp.settings, dropped
after) at the first boot and whenever they changed; the check's result is kept in `checked.json`,
with a digest of the files and of the firmware version, which later boots use instead. A crash
loop starts the device in safe mode (fp.safemode). The device itself: fp.device.
Reference: docs/device-api.md.
"""

import asyncio
import hashlib
import io
import json
import sys

from fp import FIRMWARE_VERSION, ed25519, safemode, storage
from fp.runtime import log, unload


def load_hal(board, provision):
    if board.get("port") == "esp32":
        from fp.hal_esp32 import Esp32Board

        return Esp32Board(board, provision)
    from fp.hal_sim import SimBoard

    return SimBoard(board)


def crash_line(error):
    """Return the traceback of `error` on one line, as the log keeps it."""
    buffer = io.StringIO()
    sys.print_exception(error, buffer)  # pyright: ignore[reportArgumentType] (MicroPython takes any stream)
    text = buffer.getvalue()  # pyright: ignore[reportAttributeAccessIssue] (the stubs' StringIO has no getvalue)
    lines = [line.strip() for line in text.strip().split("\n")]
    return " | ".join(lines[-1:] + lines[:-1])  # what happened first, then where


def load_settings():
    """Return the checked flash files as a Settings, or exit with one line when the device cannot run.

    A boot uses the copy the last check left (checked.json) when it is whole and still matches the
    three files and this firmware; otherwise (the first boot, a file changed, a damaged copy, a new
    release) it runs the full check, which logs each bad value, and writes the copy again.
    """
    copy = _read_copy()
    if copy is None:
        return _check()
    board, provision, config = copy
    owner_key = storage.load_owner(log, provision["owner"])
    return Settings(board, provision, owner_key, storage.load_counter(log), config)


def _check():
    """The full check (fp.settings), then the copy for the next boot.

    fp.settings is loaded for this and dropped before the rest of the device is imported: the
    start-up peak holds either the checks or the application, never both.
    """
    from fp import settings

    try:
        board = settings.check_board(settings.load(storage.BOARD_FILE, log), log)
        provision = None
        if board is not None:
            raw = settings.load(storage.PROVISION_FILE, log)
            provision = settings.check_provision(raw, board["port"], log)
        if board is None or provision is None:
            log("board.json and provision.json (with a vendor endpoint) are required in the flash root")
            sys.exit(1)
        names = [sensor["name"] for sensor in board["sensors"]]
        checked = Settings(
            board,
            provision,
            storage.load_owner(log, provision["owner"]),
            storage.load_counter(log),
            settings.check_config(settings.load(storage.CONFIG_FILE, log), names, log),
        )
    finally:
        unload("settings")
        unload("pem")
    _write_copy([board, provision, checked.config])
    return checked


def save_config(config):
    """Write config.json, checked by the command that changed it, and the copy with it when the
    copy was current: the next boot then needs no check. A power cut between the two writes leaves
    a copy that no longer matches config.json, so the next boot checks it in full."""
    copy = _read_copy()
    storage.save_json(storage.CONFIG_FILE, config)
    if copy is not None:
        copy[2] = config
        _write_copy(copy)


def _digest(text):
    """SHA-256 (hex) of this firmware's version, the three files' bytes as they are now, and `text`."""
    digest = hashlib.sha256(FIRMWARE_VERSION.encode())
    for path in (storage.BOARD_FILE, storage.PROVISION_FILE, storage.CONFIG_FILE):
        try:
            with open(path, "rb") as f:
                data = f.read()
            digest.update(b"%d:" % len(data) + data)
        except OSError:
            digest.update(b"-:")  # missing (config.json until the first command): not empty
    digest.update(text)
    return digest.digest().hex().encode()


def _read_copy():
    """[board, provision, config] from checked.json when its digest matches, else None."""
    try:
        with open(storage.CHECKED_FILE, "rb") as f:
            data = f.read()
        if data[:64] == _digest(data[64:]):
            return json.loads(data[64:])
    except (OSError, ValueError):
        pass
    return None


def _write_copy(copy):
    """checked.json: the digest (64 hex digits), then the checked values as JSON."""
    text = json.dumps(copy).encode()
    try:
        storage.write_atomic(storage.CHECKED_FILE, _digest(text) + text)
    except OSError:
        pass  # a full or read-only flash: the next boot checks the files again


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
        # The 12 KB Ed25519 table (in the heap unless read in place from ROMFS) needs one
        # contiguous block: take it while the heap is still empty, before boot's short-lived
        # allocations (settings, JSON) fragment it (main.py has taken it already, before
        # importing this module; then this is a no-op).
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
