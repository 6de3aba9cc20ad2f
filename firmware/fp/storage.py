"""Flash storage for the device: identity seed, JSON files written atomically (the boot counter:
fp.boot_counter).

Paths are relative to the flash root (the board's filesystem root; the sim board's folder).
"""

import json
import os

SEED_FILE = "key.seed"
BOARD_FILE = "board.json"  # the board's data file, copied at flash time
PROVISION_FILE = "provision.json"  # vendor endpoint, Wi-Fi, owner key...: written at flash time
CONFIG_FILE = "config.json"  # destinations and intervals: written by owner commands only
OWNER_FILE = "owner.key"  # the owner's key after a claim or hand-over
COUNTER_FILE = "cmd.cnt"  # the last accepted owner command counter
UPDATE_FILE = "update.json"  # the update state the status reports, kept across reboots (fp.ota)
CHECKED_FILE = "checked.json"  # the three JSON files as the boot check left them (fp.checked)


def exists(path):
    """True when `path` is in the flash filesystem (MicroPython's os has no path.exists)."""
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def write_atomic(path, data):
    """Write bytes so that a power cut leaves either the old or the new file, never a torn one."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def load_seed(urandom=None):
    """Return the device's Ed25519 seed, generating and storing it on first boot (os.urandom)."""
    try:
        with open(SEED_FILE, "rb") as f:
            seed = f.read()
        if len(seed) == 32:
            return seed
    except OSError:
        pass
    seed = (urandom or os.urandom)(32)  # looked up here: the webassembly port's os has none
    write_atomic(SEED_FILE, seed)
    return seed


def load_json(path, default):
    """Return the JSON value stored at `path`, or `default` if it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def save_json(path, value):
    write_atomic(path, json.dumps(value).encode())
