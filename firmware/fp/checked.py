"""The flash files as checked: the copy a boot uses (checked.json), or the full check that writes it.

The full check (fp.settings) runs at the first boot and whenever the copy does not match: its
digest covers this firmware's version, the bytes of board.json, provision.json and config.json,
and the copy's own text, so a changed or missing file, a damaged or cut-short copy and a new
release all run it again, with all its log lines. owner.key and cmd.cnt change while the device
runs: they are read at every boot, not copied. Loaded for the boot (fp.app), for a command's
new config.json (fp.device) and with fp.settings (its key and integer rules are here, where the
boot reads owner.key and cmd.cnt with them), and dropped after each: nothing here stays in the heap.
"""

import hashlib
import json

from fp import FIRMWARE_VERSION, const, storage
from fp.runtime import unload

# bytes: a str iterated on MicroPython makes a pool name of each character; const: no name for it
_HEX = const(b"0123456789abcdefABCDEF")
# the words of a damaged cmd.cnt's line: this module is dropped after the boot, and its const()
# strs with it, where a str of up to 10 characters would be a name in the pool for good
_ZERO = const("0")
_AN_INTEGER = const("an integer")


def is_int(value, low, high):
    """True for an integer (not a bool) in low..high (fp.settings' rule too)."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def is_hex_key(value):
    """True for an Ed25519 public key as 64 hex digits (fp.settings' rule too)."""
    if not isinstance(value, str) or len(value) != 64:
        return False
    for byte in value.encode():
        if byte not in _HEX:
            return False
    return True


def load(log):
    """Return (board, provision, owner key, last command counter, config), or exit with one line
    when the device cannot run."""
    copy = _read()
    if copy is None:
        # the full check (fp.settings, dropped after: the start-up peak holds either the checks or
        # the application, never both), then the copy for the next boot
        from fp import settings

        try:
            board, provision, owner_key, last_counter, config = settings.check_all(log)
        finally:
            unload("settings")
            unload("pem")
        write([board, provision, config])
        return board, provision, owner_key, last_counter, config
    board, provision, config = copy
    return board, provision, load_owner(log, provision["owner"]), load_counter(log), config


def save_config(config):
    """Write config.json, checked by the command that changed it, and the copy with it when the
    copy was current: the next boot then needs no check. A power cut between the two writes leaves
    a copy that no longer matches config.json, so the next boot checks it in full."""
    copy = _read()
    storage.save_json(storage.CONFIG_FILE, config)
    if copy is not None:
        copy[2] = config
        write(copy)


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


def _read():
    """[board, provision, config] from checked.json when its digest matches, else None."""
    try:
        with open(storage.CHECKED_FILE, "rb") as f:
            data = f.read()
        if data[:64] == _digest(data[64:]):
            return json.loads(data[64:])
    except (OSError, ValueError):
        pass
    return None


def write(copy):
    """checked.json: the digest (64 hex digits), then the checked values as JSON."""
    text = json.dumps(copy).encode()
    try:
        storage.write_atomic(storage.CHECKED_FILE, _digest(text) + text)
    except OSError:
        pass  # a full or read-only flash: the next boot checks the files again


def _damaged(log, path, *line):
    """Log a damaged file in the boot check's words (fp.settings, loaded for this line only).

    `line`: (expected, found, default) for fp.settings.problem; (default,) alone when the file is
    not JSON at all (fp.settings.load reads it again for its line). Not named: each argument name
    of a module loaded at every boot stays in the board's name pool.
    """
    from fp import settings

    if len(line) == 1:
        settings.load(path, log, line[0])
    else:
        settings.problem(log, path, "(whole file)", *line)
    unload("settings")


def load_owner(log, provisioned):
    """Return the owner's public key: owner.key (claim or hand-over) over the provisioned one.

    A damaged owner.key leaves the device unclaimed rather than falling back to the provisioned
    key: after a hand-over that key belongs to the previous owner.
    """
    try:
        with open(storage.OWNER_FILE) as f:
            text = f.read()
    except OSError:  # never claimed nor handed over since it was flashed
        return bytes.fromhex(provisioned) if provisioned else None
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if is_hex_key(value):
        return bytes.fromhex(value)
    _damaged(log, storage.OWNER_FILE, "64 hex digits", value, "no owner (press the button to claim)")
    return None


def load_counter(log):
    """Return the last accepted command counter (cmd.cnt), 0 when missing or damaged."""
    try:
        with open(storage.COUNTER_FILE) as f:
            value = json.load(f)
    except OSError:
        return 0
    except ValueError:
        _damaged(log, storage.COUNTER_FILE, _ZERO)
        return 0
    if value is None or is_int(value, 0, 0xFFFFFFFFFFFFFFFF):
        return value or 0
    _damaged(log, storage.COUNTER_FILE, _AN_INTEGER, value, 0)
    return 0
