"""Board data files (boards/<name>.json): one schema, validated once, every error naming the key.

The host checks what only it reads (chip, sizes, the MicroPython image) and then runs the device's
own board check (fp.settings.check_board) in strict mode: whatever the device would log and drop
at boot (a sensor type its port cannot read, a missing pin) is an error here, before flashing.
Sensor types are defined once, in fp.sensor_types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from fp import ringbuf, sensor_types, settings
from host_agent.board.build import ARCHES
from host_agent.errors import UserError
from host_agent.paths import BOARDS

PORTS = sensor_types.PORTS


class Board(TypedDict):
    """A board file as validate() returns it (the keys of FIELDS and OPTIONAL_FIELDS)."""

    name: str
    description: str
    chip: str
    port: str
    micropython_board: str
    mpy_arch: str
    flash_bytes: int
    heap_budget_bytes: int
    pins: dict[str, int | None]
    sensors: list[dict[str, Any]]
    queue_slots: NotRequired[int]


# key -> (python type(s), meaning) for the top level of a board file
FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "name": (str, "the board's name, equal to the file name"),
    "description": (str, "what the board is"),
    "chip": (str, "the chip (esp32, esp32s3, esp32c3, host)"),
    "port": (str, "the MicroPython port: esp32 or unix"),
    "micropython_board": (str, "the MicroPython board the base image is built for"),
    "mpy_arch": (str, "the mpy-cross -march for the board's native code"),
    "flash_bytes": (int, "flash size"),
    "heap_budget_bytes": (int, "the heap the firmware must fit"),
    "pins": (dict, "led, button, i2c_sda, i2c_scl: GPIO numbers or null"),
    "sensors": (list, "the sensors fitted: name, type, interval_s, and pin or i2c_address"),
}
# optional keys, the device's default when absent
OPTIONAL_FIELDS: dict[str, tuple[type, str]] = {
    "queue_slots": (int, "messages each destination's flash queue holds (default 128)"),
}


def _fail(path: Path, key: str, expected: str, found: object) -> UserError:
    return UserError(f"{path}: {key}: expected {expected}, found {found!r}")


def validate(path: Path, raw: object) -> Board:
    """Return the board data if it follows the schema; raise UserError naming the first problem."""
    if not isinstance(raw, dict):
        raise _fail(path, "(top level)", "an object", type(raw).__name__)
    data = cast(dict[str, object], raw)  # JSON: string keys
    for key in data:
        if key not in FIELDS and key not in OPTIONAL_FIELDS:
            raise _fail(path, key, "one of " + ", ".join([*FIELDS, *OPTIONAL_FIELDS]), "an unknown key")
    for key, (kind, meaning) in FIELDS.items():
        if key not in data:
            raise _fail(
                path, key, f"{kind.__name__ if isinstance(kind, type) else kind} ({meaning})", "nothing"
            )
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise _fail(path, key, meaning, data[key])
    if data["name"] != path.stem:
        raise _fail(path, "name", f"the file name {path.stem!r}", data["name"])
    if data["port"] not in PORTS:
        raise _fail(path, "port", " or ".join(PORTS), data["port"])
    if data["mpy_arch"] not in ARCHES:
        raise _fail(path, "mpy_arch", "one of " + ", ".join(ARCHES), data["mpy_arch"])
    board = cast(Board, data)  # every key of FIELDS checked above; the device's check follows
    _check_as_the_device_does(path, board)
    _check_queues_fit_the_flash(path, board)
    return board


def _check_as_the_device_does(path: Path, data: Board) -> None:
    """Run fp.settings.check_board on the board file; its first complaint is the error."""
    complaints: list[str] = []
    settings.check_board(data, complaints.append)
    if complaints:
        # "board.json: KEY: expected ..., found ...; using DEFAULT": the device would go on with the
        # default, and lose what the file meant; the host refuses the file instead
        line = complaints[0].split(": ", 1)[-1].split("; using ", 1)[0]
        raise UserError(f"{path}: {line}")


def load(name: str, folder: Path = BOARDS) -> Board:
    """Load and validate boards/<name>.json."""
    path = folder / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.json")))
        raise UserError(f"no board {name!r}: known boards are {known} (add one as {path})")
    try:
        data: object = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not JSON: {error}") from None
    return validate(path, data)


def names(folder: Path = BOARDS) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.json"))


def _check_queues_fit_the_flash(path: Path, data: Board) -> None:
    """Every destination's queue within half the flash (the slot range is the device's check)."""
    slots = data.get("queue_slots", settings.DEFAULT_QUEUE_SLOTS)
    slot_bytes = ringbuf.SLOT_BYTES * settings.MAX_DESTINATIONS
    if slots * slot_bytes > data["flash_bytes"] // 2:
        raise _fail(
            path,
            "queue_slots",
            f"at most {data['flash_bytes'] // 2 // slot_bytes} "
            f"(the queues of {settings.MAX_DESTINATIONS} destinations, {ringbuf.SLOT_BYTES} bytes a slot, "
            f"within half of flash_bytes {data['flash_bytes']})",
            slots,
        )
