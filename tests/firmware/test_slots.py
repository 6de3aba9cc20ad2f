"""A/B slots (fp.slots): a power cut at every write step of an update leaves a bootable release,
the trial release boots on probation, and unconfirmed boots roll back; under both interpreters."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from fp import boot as fp_boot
from fp import release, slot_install, slots
from host_agent.board.build import compile_firmware
from tests.firmware.conftest import counter_board, wait_for
from tests.helpers import run_firmware_script

VENDOR = SigningKey(bytes(range(1, 33)))
OLD = {"main.py": b"print('old')\n", "lib/app.mpy": b"old app" * 50}
NEW = {"main.py": b"print('new')\n", "lib/app.mpy": bytes(range(256)) * 12, "lib/extra.mpy": b"extra" * 300}
CHUNK_BYTES = 1024
MAX_TRIES = 3

UPDATE = """
import sys, json
from fp import release, slot_install, slots
data = json.loads(open("update.json").read())
manifest = bytes.fromhex(data["manifest"])
steps = []
def step(name):
    steps.append(name)
    if len(steps) == data["cut_at"]:
        if name == "switch":  # cut in the middle of writing the new record: a torn temporary file
            with open(slots.STATE_FILE + ".tmp", "w") as f:
                f.write('{"active": "slot_')
        print(json.dumps(steps))
        sys.exit(0)
installer = slot_install.Installer(release, release.parse_release(manifest), manifest, slots.load_state(), step)
installer.begin()
for index, offset, piece, digest in data["chunks"]:
    installer.chunk(index, offset, bytes.fromhex(piece), bytes.fromhex(digest))
installer.commit()
print(json.dumps(steps + ["done"]))
"""

BOOT = """
import sys, json, hashlib
from fp import release, slot_install, slots
folder, state, event = slots.choose_boot(slots.load_state(), MAX_TRIES)
slots.save_state(state)
prefix = folder + "/" if folder else ""
with open(prefix + slots.MANIFEST_FILE, "rb") as f:
    booted = release.parse_release(f.read())
whole = True
for path, size, digest in booted.files:
    try:
        with open(prefix + path, "rb") as f:
            whole = whole and hashlib.sha256(f.read()).digest() == digest
    except OSError:
        whole = False
if open("mode").read() == "confirm":  # the first delivered reading of the trial release
    slots.save_state(slot_install.confirmed(state))
print(json.dumps([folder, list(booted.version), event, whole]))
""".replace("MAX_TRIES", str(MAX_TRIES))


def manifest_for(files: dict[str, bytes], version: tuple[int, int, int]) -> bytes:
    listed = [(path, len(data), hashlib.sha256(data).digest()) for path, data in files.items()]
    sign = lambda data: VENDOR.sign(data).signature  # noqa: E731
    return release.encode_release(sign, bytes(VENDOR.verify_key), version, "x64", 1, (0, 0, 0), listed)


def chunks_of(files: dict[str, bytes]) -> list[list]:
    out = []
    for index, data in enumerate(files.values()):
        for offset in range(0, len(data), CHUNK_BYTES):
            piece = data[offset : offset + CHUNK_BYTES]
            out.append([index, offset, piece.hex(), hashlib.sha256(piece).hexdigest()])
    return out


def factory_flash(flash: Path) -> None:
    """A board as flashed: the old release in the flash root, with its manifest."""
    for path, data in OLD.items():
        (flash / path).parent.mkdir(parents=True, exist_ok=True)
        (flash / path).write_bytes(data)
    (flash / slots.MANIFEST_FILE).write_bytes(manifest_for(OLD, (0, 1, 0)))


def run(interpreter: str, script: str, flash: Path) -> str:
    return run_firmware_script(interpreter, script, flash).strip().splitlines()[-1]


def boot(interpreter: str, flash: Path, confirm: bool = False) -> list:
    (flash / "mode").write_text("confirm" if confirm else "")
    return json.loads(run(interpreter, BOOT, flash))


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_a_power_cut_at_every_write_step_boots_the_old_or_the_new_release(tmp_path, interpreter):
    update = {"manifest": manifest_for(NEW, (0, 2, 0)).hex(), "chunks": chunks_of(NEW), "cut_at": 0}
    probe = tmp_path / "probe"
    probe.mkdir()
    factory_flash(probe)
    (probe / "update.json").write_text(json.dumps(update))
    all_steps = json.loads(run(interpreter, UPDATE, probe))
    # clear, manifest, one write per chunk, the switch
    assert all_steps == ["clear-slot", "write-manifest"] + [
        f"write-chunk {index}@{offset}" for index, offset, _, _ in update["chunks"]
    ] + ["switch", "done"]
    for cut_at in range(1, len(all_steps) + 1):  # the last: no cut, the update completes
        flash = tmp_path / f"cut-{cut_at}"
        flash.mkdir()
        factory_flash(flash)
        (flash / "update.json").write_text(json.dumps(dict(update, cut_at=cut_at)))
        run(interpreter, UPDATE, flash)
        folder, version, event, whole = boot(interpreter, flash)
        assert whole, (cut_at, all_steps[cut_at - 1])
        if cut_at < len(all_steps):  # cut before or during a write: the switch has not happened
            assert (folder, version, event) == ("", [0, 1, 0], "normal"), all_steps[cut_at - 1]
        else:
            assert (folder, version, event) == ("slot_a", [0, 2, 0], "probation")


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_an_unconfirmed_release_rolls_back_after_max_tries_and_a_confirmed_one_stays(tmp_path, interpreter):
    update = {"manifest": manifest_for(NEW, (0, 2, 0)).hex(), "chunks": chunks_of(NEW), "cut_at": 0}
    for case in ("never-confirmed", "confirmed"):
        flash = tmp_path / case
        flash.mkdir()
        factory_flash(flash)
        (flash / "update.json").write_text(json.dumps(update))
        run(interpreter, UPDATE, flash)
        if case == "never-confirmed":
            boots = [boot(interpreter, flash)[:3] for _ in range(MAX_TRIES + 2)]
            new, old = ["slot_a", [0, 2, 0], "probation"], ["", [0, 1, 0]]
            assert boots[:MAX_TRIES] == [new] * MAX_TRIES
            assert boots[MAX_TRIES] == [*old, "rolled-back"] and boots[MAX_TRIES + 1] == [*old, "normal"]
        else:
            assert boot(interpreter, flash, confirm=True)[:3] == ["slot_a", [0, 2, 0], "probation"]
            for _ in range(MAX_TRIES + 1):
                assert boot(interpreter, flash)[:3] == ["slot_a", [0, 2, 0], "normal"]


def test_an_incomplete_transfer_does_not_switch(tmp_path, monkeypatch):
    parsed = release.parse_release(manifest_for(NEW, (0, 2, 0)))
    state = slots.default_state()
    monkeypatch.chdir(tmp_path)
    installer = slot_install.Installer(release, parsed, b"m", state)
    installer.begin()
    first = chunks_of(NEW)[0]
    installer.chunk(first[0], first[1], bytes.fromhex(first[2]), bytes.fromhex(first[3]))
    with pytest.raises(release.ProtocolError) as refused:
        installer.commit()
    assert refused.value.reason == "truncated"
    assert slots.load_state() == slots.default_state()


def test_a_corrupt_or_foreign_state_record_boots_the_factory_release():
    for raw in (None, [], {"active": "../x"}, {"active": "slot_a", "trial": "slot_a", "tries": 1}):
        state = slots.parse_state(raw)
        assert slots.choose_boot(state, MAX_TRIES)[0] in ("", "slot_a")
    assert slots.parse_state({"active": "../x"}) == slots.default_state()
    assert slots.parse_state({"active": "slot_a", "trial": "slot_a", "tries": 1})["trial"] is None


def _install(flash: Path, files: dict[str, bytes], version: tuple[int, int, int]) -> None:
    """Write `files` as the trial release with fp.slot_install's installer (CPython, in the flash)."""
    data = manifest_for(files, version)
    cwd = Path.cwd()
    os.chdir(flash)
    try:
        installer = slot_install.Installer(release, release.parse_release(data), data, slots.load_state())
        installer.begin()
        for index, offset, piece, digest in chunks_of(files):
            installer.chunk(index, offset, bytes.fromhex(piece), bytes.fromhex(digest))
        installer.commit()
    finally:
        os.chdir(cwd)


def _state(flash: Path) -> dict:
    return json.loads((flash / slots.STATE_FILE).read_text())


def test_a_device_boots_a_trial_release_and_keeps_it_once_it_delivers(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    build = compile_firmware("x64", tmp_path / "build")
    trial = {
        p.relative_to(build.path).as_posix(): p.read_bytes() for p in build.path.rglob("*") if p.is_file()
    }
    vendor = collector_factory(mosquitto)
    flash = tmp_path / "flash"
    device = sim_devices(flash, (mosquitto.host, mosquitto.port), counter_board(), code=build.path)
    device.start()
    wait_for(lambda: len(vendor.values("n")) >= 1, 20, "a reading from the factory release")
    device.stop()
    _install(flash, trial, (0, 2, 0))
    assert _state(flash)["trial"] == "slot_a"
    before = len(vendor.values("n"))
    device.start()
    wait_for(lambda: len(vendor.values("n")) > before, 20, "a reading from the trial release")
    assert "fp: boot release in slot_a (probation)" in device.log
    wait_for(lambda: _state(flash) == {"active": "slot_a", "trial": None, "tries": 0}, 10, "confirmed")


def test_a_trial_release_that_cannot_start_is_rolled_back_in_the_same_boot(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    build = compile_firmware("x64", tmp_path / "build")
    broken = {
        p.relative_to(build.path).as_posix(): p.read_bytes() for p in build.path.rglob("*") if p.is_file()
    }
    del broken["fp/app.mpy"]  # signed and whole, but its application fails as it loads
    broken["fp/app.py"] = b"raise RuntimeError('this release is broken')\n"
    vendor = collector_factory(mosquitto)
    flash = tmp_path / "flash"
    flash.mkdir()
    _install(flash, broken, (0, 2, 0))
    device = sim_devices(flash, (mosquitto.host, mosquitto.port), counter_board(), code=build.path)
    device.start()
    wait_for(lambda: len(vendor.values("n")) >= 1, 20, "a reading from the factory release")
    assert any(line.startswith("fp: release in slot_a cannot start") for line in device.log), device.log
    assert _state(flash) == {"active": "", "trial": None, "tries": 0}


def test_a_trial_release_that_crashes_after_starting_is_rolled_back_after_max_tries_not_into_safe_mode(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    build = compile_firmware("x64", tmp_path / "build")
    crashing = {
        p.relative_to(build.path).as_posix(): p.read_bytes() for p in build.path.rglob("*") if p.is_file()
    }
    del crashing["fp/http_api.mpy"]  # imported once the device runs, with its HTTP API on
    crashing["fp/http_api.py"] = b"raise RuntimeError('this release crashes')\n"
    vendor = collector_factory(mosquitto)
    flash = tmp_path / "flash"
    flash.mkdir()
    _install(flash, crashing, (0, 2, 0))
    device = sim_devices(
        flash, ("127.0.0.1", 1), counter_board(), code=build.path, provision={"safe_mode_boots": MAX_TRIES}
    )  # a vendor that never answers: nothing delivered, so only a crash decides
    for _ in range(MAX_TRIES):
        device.start()
        assert device.wait_exit() == 0, "\n".join(device.log)  # crash, then the sim's reset
        assert "fp: boot release in slot_a (probation)" in device.log
    device.stop()
    device = sim_devices(
        flash,
        (mosquitto.host, mosquitto.port),
        counter_board(),
        code=build.path,
        provision={"safe_mode_boots": MAX_TRIES},
    )
    device.start()
    wait_for(lambda: len(vendor.values("n")) >= 1, 20, "a reading from the previous release")
    assert "fp: the trial release never got stable: rolled back" in device.log
    assert not any("safe mode" in line for line in device.log)
    assert _state(flash) == {"active": "", "trial": None, "tries": 0}


BOOT_NAMES = """
import micropython
from fp import slots
print(slots.boot_folder())
micropython.qstr_info(1)
from fp import slot_install
print("install loaded")
micropython.qstr_info(1)
"""


def test_the_boot_s_choice_of_release_leaves_none_of_the_install_s_names_in_the_pool(tmp_path):
    """main.py picks the release at every boot with fp.slots; the install (fp.slot_install) is
    loaded only with an update. Each name a loaded module holds stays in the board's name pool
    (qstrs) for good, and the pool grows in chunks (a 640-name one on a running board)."""
    out = run_firmware_script("micropython", BOOT_NAMES, cwd=tmp_path)
    at_boot, with_install = out.split("install loaded")
    assert "('', 'normal')" in at_boot
    for name in ("Installer", "_remove_tree", "_makedirs", "inactive_slot", "staged", "confirm_trial"):
        assert f"Q({name})" not in at_boot, name
        assert f"Q({name})" in with_install, name  # the names are the install's, made when it loads


BOOT_START = """
import micropython
from fp import boot
app = boot.start()
print(app.__name__)
micropython.qstr_info(1)
"""


def test_a_boot_with_no_trial_release_leaves_fp_slots_out_and_a_trial_one_loads_it(tmp_path):
    """main.py's boot (fp.boot) reads `slot.json` itself when no trial release waits, so a normal
    boot never loads fp.slots and its names (which stay in the board's name pool for good); a
    trial release to count or roll back loads it, and its rules decide as before."""
    for record in (None, {"active": "", "trial": None, "tries": 0}):
        if record is not None:
            (tmp_path / slots.STATE_FILE).write_text(json.dumps(record))
        out = run_firmware_script("micropython", BOOT_START, cwd=tmp_path)
        assert "fp.app" in out and "Q(fp.boot)" in out, out
        for name in ("fp.slots", "choose_boot", "parse_state", "load_state", "save_state"):
            assert f"Q({name})" not in out, (record, name)
    (tmp_path / slots.STATE_FILE).write_text(
        json.dumps({"active": "", "trial": "slot_a", "tries": MAX_TRIES})
    )
    out = run_firmware_script("micropython", BOOT_START, cwd=tmp_path)
    assert "fp: the trial release never got stable: rolled back" in out and "fp.app" in out, out
    assert "Q(fp.slots)" in out and "Q(choose_boot)" in out
    assert _state(tmp_path) == {"active": "", "trial": None, "tries": 0}


BOOT_RECORDS = [
    None,  # never updated
    "{not json",  # a record no one can read
    {"active": "", "trial": None, "tries": 0},
    {"active": "slot_a", "trial": None, "tries": 0},
    {"active": "slot_b"},  # keys missing
    {"active": "slot_a", "trial": None, "tries": 7},
    {"active": "slot_c", "trial": None, "tries": 0},  # no such release
    {"active": "../etc", "trial": None},
    {"active": "slot_a", "trial": "slot_a", "tries": 0},  # a trial that is the active release
    {"active": "", "trial": "slot_b", "tries": 0},
    {"active": "slot_b", "trial": "slot_a", "tries": MAX_TRIES},
    ["slot_a"],
]


@pytest.mark.parametrize("record", BOOT_RECORDS, ids=range(len(BOOT_RECORDS)))
def test_fp_boot_chooses_the_release_fp_slots_rules_choose_for_every_record(tmp_path, record):
    """fp.boot decides a boot with no trial release by itself (fp.slots left out, for its names):
    for every record, the release it boots and the event it names are those of fp.slots' rules."""
    assert fp_boot._STATE_FILE == slots.STATE_FILE and fp_boot._RELEASES == (slots._FACTORY, *slots._SLOTS)
    if record is not None:
        text = record if isinstance(record, str) else json.dumps(record)
        (tmp_path / slots.STATE_FILE).write_text(text)
    parsed = record if isinstance(record, (dict, list)) else None
    state = slots.parse_state(parsed) if parsed is not None else slots.default_state()
    folder, _, event = slots.choose_boot(state, MAX_TRIES)
    out = run_firmware_script("micropython", BOOT_START, cwd=tmp_path)
    if folder:
        assert f"fp: boot release in {folder} ({event})" in out, out
    else:
        assert "fp: boot release in" not in out, out
        assert ("rolled back" in out) == (event == "rolled-back"), out
    assert "fp.app" in out, out
