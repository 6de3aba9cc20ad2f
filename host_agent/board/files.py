"""Board data files (boards/<name>.json): one schema, validated once, every error naming the key."""

from __future__ import annotations

import json
from pathlib import Path

from host_agent.board.build import ARCHES
from host_agent.errors import UserError
from host_agent.paths import BOARDS

SENSOR_TYPES = ("internal-temp", "adc", "dht22", "bme280", "counter")
PORTS = ("esp32", "unix")
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
PINS = ("led", "button", "i2c_sda", "i2c_scl")


def _fail(path: Path, key: str, expected: str, found: object) -> UserError:
    return UserError(f"{path}: {key}: expected {expected}, found {found!r}")


def validate(path: Path, data: object) -> dict:
    """Return the board data if it follows the schema; raise UserError naming the first problem."""
    if not isinstance(data, dict):
        raise _fail(path, "(top level)", "an object", type(data).__name__)
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
    for pin in PINS:
        value = data["pins"].get(pin, "missing")
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 48
        ):
            raise _fail(path, f"pins.{pin}", "a GPIO number 0..48 or null", value)
    if "queue_slots" in data:
        _check_queue_slots(path, data)
    names = set()
    for index, sensor in enumerate(data["sensors"]):
        where = f"sensors[{index}]"
        if not isinstance(sensor, dict) or not isinstance(sensor.get("name"), str) or not sensor["name"]:
            raise _fail(path, where + ".name", "a sensor name", sensor)
        if sensor["name"] in names:
            raise _fail(path, where + ".name", "a name not used by another sensor", sensor["name"])
        names.add(sensor["name"])
        if sensor.get("type") not in SENSOR_TYPES:
            raise _fail(path, where + ".type", "one of " + ", ".join(SENSOR_TYPES), sensor.get("type"))
        interval = sensor.get("interval_s")
        if not isinstance(interval, int | float) or isinstance(interval, bool) or not 0 < interval <= 86400:
            raise _fail(path, where + ".interval_s", "seconds in (0, 86400]", interval)
    return data


def load(name: str, folder: Path = BOARDS) -> dict:
    """Load and validate boards/<name>.json."""
    path = folder / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.json")))
        raise UserError(f"no board {name!r}: known boards are {known} (add one as {path})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not JSON: {error}") from None
    return validate(path, data)


def names(folder: Path = BOARDS) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.json"))


def _check_queue_slots(path: Path, data: dict) -> None:
    """The device's own range (fp.settings), and every destination's queue within half the flash."""
    from fp import ringbuf, settings

    slots = data["queue_slots"]
    low, high = settings.MIN_QUEUE_SLOTS, settings.MAX_QUEUE_SLOTS
    if not isinstance(slots, int) or isinstance(slots, bool) or not low <= slots <= high:
        raise _fail(path, "queue_slots", f"an integer {low}..{high}", slots)
    queues_bytes = slots * ringbuf.SLOT_BYTES * settings.MAX_DESTINATIONS
    if queues_bytes > data["flash_bytes"] // 2:
        raise _fail(
            path,
            "queue_slots",
            f"at most {data['flash_bytes'] // 2 // (ringbuf.SLOT_BYTES * settings.MAX_DESTINATIONS)} "
            f"(the queues of {settings.MAX_DESTINATIONS} destinations, {ringbuf.SLOT_BYTES} bytes a slot, "
            f"within half of flash_bytes {data['flash_bytes']})",
            slots,
        )
