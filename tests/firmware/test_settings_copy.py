"""The checked copy of the settings (fp.checked, checked.json): a later boot uses it instead of the full
check (fp.settings); a changed file, a damaged or old copy, a new release and a power cut at every
write step all end in the full check with today's log lines, or in the copy of the same result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from host_agent.paths import BOARDS
from tests.helpers import run_firmware_script

OWNER = "ab" * 32
# one bad value in each file: the full check logs a line for each, the copy none
PROVISION = {"vendor": {"host": "127.0.0.1", "port": 1883}, "owner": OWNER, "wifi": 5}
CONFIG = {
    "destinations": [{"name": "vendor"}, {"name": "home", "host": "h", "port": 0}],
    "intervals": {"env": 5},
}
NEW_CONFIG = {"destinations": [{"name": "vendor"}, {"name": "home", "host": "h"}], "intervals": {"env": 7}}

# One boot's settings (fp.app.load_settings) and its log lines, as JSON, and whether fp.settings
# is still loaded. `copy.json` in the flash
# folder, when there, says what to do around it: cut the power at the `cut_at`th write step of a
# first boot ("boot") or of a command's new config ("command"), or boot as a new release would.
BOOT = """
import json, os, sys
from fp import app, storage
lines = []
app.log = lines.append
try:
    with open("copy.json") as f:
        plan = json.load(f)
except OSError:
    plan = {}
steps = []
def step(name):
    steps.append(name)
    if len(steps) == plan.get("cut_at"):
        print(json.dumps(["cut", steps]))
        sys.exit(0)
real_open = open
class Torn:
    # a file being written: a cut in its middle leaves the first half (write_atomic's temporary file)
    def __init__(self, path, mode="r"):
        self.file = real_open(path, mode)
        self.path = path
        self.read = self.file.read
    def __enter__(self):
        return self
    def __exit__(self, *args):
        self.file.close()
    def write(self, data):
        half = len(data) // 2
        self.file.write(data[:half])
        step("write " + self.path)
        self.file.write(data[half:])
class CutOs:
    stat = os.stat
    def rename(self, old, new):
        step("rename " + new)
        os.rename(old, new)
if "cut_at" in plan:
    storage.open = Torn
    storage.os = CutOs()
from fp import checked
if plan.get("release"):
    checked.FIRMWARE_VERSION = plan["release"]
if plan.get("action") == "command":
    checked.save_config(plan["config"])
    print(json.dumps(["done", steps]))
    sys.exit(0)
checked = app.load_settings()
if "cut_at" in plan:
    print(json.dumps(["done", steps]))
    sys.exit(0)
owner = checked.owner_key.hex() if checked.owner_key else None
got = [checked.board, checked.provision, owner, checked.last_counter, checked.config]
print(json.dumps([got, lines, "fp.settings" in sys.modules]))
"""


def run(interpreter: str, flash: Path) -> list:
    return json.loads(run_firmware_script(interpreter, BOOT, flash).strip().splitlines()[-1])


def boot(interpreter: str, flash: Path, **plan) -> list:
    """Boot once; with a plan, as the plan says (then the steps it ran)."""
    (flash / "copy.json").unlink(missing_ok=True)
    if plan:
        (flash / "copy.json").write_text(json.dumps(plan))
    return run(interpreter, flash)


def flashed(tmp_path: Path, name: str, config: dict | None = CONFIG) -> Path:
    flash = tmp_path / name
    flash.mkdir()
    shutil.copy(BOARDS / "sim.json", flash / "board.json")
    (flash / "provision.json").write_text(json.dumps(PROVISION))
    if config is not None:
        (flash / "config.json").write_text(json.dumps(config))
    return flash


def full_check(interpreter: str, flash: Path, tmp_path: Path) -> list:
    """What today's full check gives for the files of `flash` (a copy of it without checked.json)."""
    fresh = tmp_path / (flash.name + "-fresh")
    shutil.copytree(flash, fresh)
    (fresh / "checked.json").unlink(missing_ok=True)
    got, lines, _ = boot(interpreter, fresh)
    shutil.rmtree(fresh)
    return [got, lines]


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_a_later_boot_uses_the_checked_copy_and_a_changed_damaged_or_old_one_gets_the_full_check(
    interpreter, tmp_path
):
    flash = flashed(tmp_path, "flash")
    first, lines, _ = boot(interpreter, flash)
    assert len(lines) == 2 and lines[0].startswith("provision.json: wifi: expected a map"), lines
    assert lines[1].startswith("config.json: destinations[1].port: expected an integer 1..65535"), lines
    assert first[2] == OWNER and [d["name"] for d in first[4]["destinations"]] == ["vendor"]
    assert (flash / "checked.json").exists()

    later, later_lines, loaded = boot(interpreter, flash)
    assert (later, later_lines, loaded) == (first, [], False)  # the same settings, nothing logged

    copy = (flash / "checked.json").read_bytes()
    damaged = {
        "a byte flipped": copy[:100] + bytes([copy[100] ^ 1]) + copy[101:],
        "cut short": copy[: len(copy) // 2],
        "empty": b"",
    }
    for why, data in damaged.items():
        (flash / "checked.json").write_bytes(data)
        assert boot(interpreter, flash)[:2] == [first, lines], why  # the full check, today's lines
        assert boot(interpreter, flash)[:2] == [first, []], why  # and the copy written again
    assert boot(interpreter, flash, release="9.9.9")[:2] == [first, lines]  # a new release checks

    provision = dict(PROVISION, wifi={"ssid": "attic"})  # a file changed (by a new flash)
    (flash / "provision.json").write_text(json.dumps(provision))
    changed, changed_lines, _ = boot(interpreter, flash)
    assert changed_lines == [lines[1]] and changed[1]["wifi"] == {"ssid": "attic", "password": ""}
    (flash / "config.json").unlink()  # missing is not empty: the vendor only, checked again
    assert boot(interpreter, flash)[:2] == full_check(interpreter, flash, tmp_path)


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_the_owner_and_the_counter_are_read_at_every_boot_and_a_damaged_one_logged_as_before(
    interpreter, tmp_path
):
    flash = flashed(tmp_path, "flash")
    boot(interpreter, flash)
    (flash / "owner.key").write_text(json.dumps("cd" * 32))  # a claim since the copy was written
    (flash / "cmd.cnt").write_text("7")
    got, lines, loaded = boot(interpreter, flash)
    assert (got[2], got[3], lines, loaded) == ("cd" * 32, 7, [], False)
    (flash / "owner.key").write_text("not json")
    (flash / "cmd.cnt").write_text('"seven"')
    got, lines, loaded = boot(interpreter, flash)
    assert (got[2], got[3], loaded) == (None, 0, False)  # the checks loaded for the lines, and dropped
    assert lines == [
        "owner.key: (whole file): expected 64 hex digits, found 'not json'; using no owner (press the button to claim)",
        "cmd.cnt: (whole file): expected an integer, found 'seven'; using 0",
    ]
    (flash / "cmd.cnt").write_text("{")
    assert (
        boot(interpreter, flash)[1][1]
        == "cmd.cnt: (whole file): expected JSON, found unreadable text; using 0"
    )


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_a_power_cut_at_every_write_step_of_the_copy_boots_with_the_checked_settings(interpreter, tmp_path):
    """The first boot writes the copy; a command's new config writes config.json, then the copy. A cut
    at each write step (in the middle of a file, before its rename) still boots with what the full
    check gives for the files then in flash: the old config or the new one, never a mix."""
    probe = flashed(tmp_path, "probe")
    _, first_steps = boot(interpreter, probe, cut_at=0)
    assert first_steps == ["write checked.json.tmp", "rename checked.json"]
    _, command_steps = boot(interpreter, probe, cut_at=0, action="command", config=NEW_CONFIG)
    assert command_steps == [
        "write config.json.tmp",
        "rename config.json",
        "write checked.json.tmp",
        "rename checked.json",
    ]
    configs = []
    for action, steps in (("boot", first_steps), ("command", command_steps)):
        for cut_at in range(1, len(steps) + 1):
            flash = flashed(tmp_path, f"{action}-{cut_at}")
            if action == "command":
                boot(interpreter, flash)  # the first boot wrote the copy
            assert boot(interpreter, flash, cut_at=cut_at, action=action, config=NEW_CONFIG)[0] == "cut"
            got, lines, loaded = boot(interpreter, flash)
            expected = full_check(interpreter, flash, tmp_path)
            assert got == expected[0], (action, steps[cut_at - 1])
            # the copy was not in place: the full check ran, with its lines; else the copy, silently
            is_checked = action == "boot" or cut_at > 2
            assert (lines, loaded) == (expected[1] if is_checked else [], False), (action, steps[cut_at - 1])
            configs.append(got[4]["intervals"])
            assert boot(interpreter, flash)[1] == []  # the copy is in place after any of them
    assert configs == [{"env": 5}] * 4 + [{"env": 7}] * 2  # the old config until config.json's rename


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_the_card_read_at_flash_time_leaves_the_checked_copy_for_the_first_boot(interpreter, tmp_path):
    """`firstparty flash` reads the card through the device's own boot check
    (fp.identity.card_at_flash): the device's first boot then uses the copy, and loads no checks."""
    flash = flashed(tmp_path, "flash")
    script = "from fp import identity\nprint(identity.card_at_flash().hex())\n"
    stdout = run_firmware_script(interpreter, script, flash)
    assert "provision.json: wifi: expected a map" in stdout  # the check ran, with its lines
    got, lines, loaded = boot(interpreter, flash)
    assert (lines, loaded) == ([], False)
    assert got == full_check(interpreter, flash, tmp_path)[0]
