"""The flash files the device reads at boot, checked once: provision.json, config.json, board.json.

Each bad value is one log line naming the file, the key, what was expected, what was found and
the safe default used instead; the device then runs with that default. Only an unusable vendor
endpoint is fatal (`check_provision` returns None): without it a fresh device has nowhere to go.
The reference of every key is docs/device-api.md. The device loads this module for the boot check
when the files changed since the last one (fp.checked), for a set-destinations or set-interval
command and for the line of a damaged owner.key or cmd.cnt, and drops it after: its code would
otherwise stay in the heap (its names stay in the qstr pool all the same: hence the checked copy
later boots use instead).
"""

import json
import sys

from fp import const, sensor_types
from fp.checked import is_hex_key, is_int, load_counter, load_owner  # the boot's rules: one home
from fp.storage import BOARD_FILE, CONFIG_FILE, PROVISION_FILE

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any, Callable

_DEFAULT_INTERVAL_S = const(10)
MAX_INTERVAL_S = 86400
MAX_DESTINATIONS = 4
_DEFAULT_MQTT_PORT = const(1883)
_DEFAULT_CLAIM_WINDOW_S = const(120)
_DEFAULT_SAFE_MODE_BOOTS = const(5)
_DEFAULT_SAFE_MODE_WINDOW_S = const(600)
# board.json queue_slots: messages each destination's flash queue holds (fp.ringbuf, 512 bytes a
# slot). 128 (64 KB) rides out about two minutes of outage at a reading a second; a board that
# reports faster sets more. 1024 (512 KB per destination) is the cap (host_agent.board.files checks
# it against the board's flash_bytes too).
DEFAULT_QUEUE_SLOTS = 128
_MIN_QUEUE_SLOTS = const(16)
_MAX_QUEUE_SLOTS = const(1024)
PINS = ("led", "button", "i2c_sda", "i2c_scl")
PROVISION_KEYS = (
    "vendor",
    "wifi",
    "owner",
    "claim_window_s",
    "http_port",
    "safe_mode_boots",
    "safe_mode_window_s",
    "release_keys",
)
TEXT_KEYS = ("user", "password", "ca", "client_cert", "client_key")
BROKER_KEYS = (
    "name",
    "host",
    "port",
    "user",
    "password",
    "tls",
    "ca",
    "client_cert",
    "client_key",
    "receipts",
)
# bytes, checked byte by byte: a str iterated on MicroPython makes a pool name of each character
_NAME_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789_-"


def _show(value):
    text = repr(value)
    return text if len(text) <= 48 else text[:45] + "..."


def problem(log, path, key, expected, found, default):
    """Log the one line that describes a bad value and the default used instead."""
    log("%s: %s: expected %s, found %s; using %s" % (path, key, expected, _show(found), default))


def _unknown(log, path, key, known):
    log("%s: %s: expected one of %s, found an unknown key; ignored" % (path, key, ", ".join(known)))


def _is_name(value):
    if not isinstance(value, str) or not 0 < len(value) <= 16:
        return False
    for byte in value.encode():
        if byte not in _NAME_CHARS:
            return False
    return True


def load(path, log, default="the defaults"):
    """Return the JSON value in `path`, or None when it is missing (silently) or unreadable (logged)."""
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return None
    except ValueError:
        log("%s: (whole file): expected JSON, found unreadable text; using %s" % (path, default))
        return None


def _int_setting(log, path, raw, key, low, high, default):
    if key not in raw:
        return default
    value = raw[key]
    if is_int(value, low, high):
        return value
    problem(log, path, key, "an integer %d..%d" % (low, high), value, default)
    return default


def broker_problem(spec):
    """Return (key, expected, found) for the first unusable value of a destination, or None.

    Used for config.json at boot and for the owner's set-destinations command alike, so the device
    never stores a destination it would refuse to load. The name becomes a file name (its flash
    queue), hence the narrow alphabet.
    """
    if not isinstance(spec, dict):
        return "(entry)", "a map with name, host, port", spec
    name = spec.get("name")
    if not _is_name(name):
        return "name", "1..16 characters of a-z 0-9 _ -", name
    for key in spec:
        if key not in BROKER_KEYS:
            return key, "one of " + ", ".join(BROKER_KEYS), "an unknown key"
    if "receipts" in spec and not is_hex_key(spec["receipts"]):
        return (
            "receipts",
            "the receipt key of an agent that stores readings (64 hex digits)",
            spec["receipts"],
        )
    if name == "vendor" and "host" not in spec:
        return None  # the vendor endpoint from provision.json
    host = spec.get("host")
    if not isinstance(host, str) or not 0 < len(host) <= 253:
        return "host", "a host name or address", host
    if "port" in spec and not is_int(spec["port"], 1, 65535):
        return "port", "an integer 1..65535", spec["port"]
    for key in TEXT_KEYS:
        if spec.get(key) is not None and not isinstance(spec[key], str):
            return key, "text", spec[key]
    if not isinstance(spec.get("tls", False), bool):
        return "tls", "true or false", spec["tls"]
    return _check_tls(spec)


def destination_problem(spec, names):
    """broker_problem, and a name that one of `names` (the destinations before it) already has."""
    found = broker_problem(spec)
    if found is None and spec["name"] in names:
        found = ("name", "a name no other destination has", spec["name"])
    return found


def _check_tls(spec):
    """(key, expected, found) when the TLS settings cannot work, else None."""
    if spec.get("ca") or spec.get("client_cert") or spec.get("client_key"):
        found = _check_pem(spec)
        if found is not None:
            return found
    if bool(spec.get("client_cert")) != bool(spec.get("client_key")):
        missing = "client_key" if spec.get("client_cert") else "client_cert"
        return missing, "client_cert and client_key together", "only one of them"
    if spec.get("tls") and not spec.get("ca"):
        return "ca", "the broker's CA certificate (PEM) when tls is true", "none"
    if spec.get("client_cert") and not spec.get("tls"):
        return "tls", "true when a client certificate is given", "false"
    return None


def _check_pem(spec):
    """(key, expected, found) for TLS text that is not PEM, else None."""
    from fp import pem  # only a TLS destination loads it (and fp.runtime.unload drops it after)

    if spec.get("ca"):
        try:
            pem.certificates(spec["ca"])
        except ValueError:
            return "ca", "PEM certificates", "text that holds none"
    if spec.get("client_cert"):
        try:
            pem.certificates(spec["client_cert"])
        except ValueError:
            return "client_cert", "a PEM certificate", "text that is not one"
    if spec.get("client_key"):
        try:
            pem.private_key(spec["client_key"])
        except ValueError:
            return "client_key", "one PEM private key", "text that is not one"
    return None


def _check_vendor(log, path, vendor):
    """Return the vendor endpoint with usable values, or None when its host is not usable."""
    if not isinstance(vendor, dict) or not isinstance(vendor.get("host"), str) or not vendor["host"]:
        found = vendor.get("host") if isinstance(vendor, dict) else vendor
        log("%s: vendor.host: expected a host name or address, found %s; cannot run" % (path, _show(found)))
        return None
    clean = {"host": vendor["host"], "port": _DEFAULT_MQTT_PORT}
    for key in vendor:
        value = vendor[key]
        where = "vendor." + key
        if key == "host":
            continue
        if key == "port":
            if is_int(value, 1, 65535):
                clean["port"] = value
            else:
                problem(log, path, where, "an integer 1..65535", value, _DEFAULT_MQTT_PORT)
        elif key in TEXT_KEYS:
            if isinstance(value, str):
                clean[key] = value
            elif value is not None:
                problem(log, path, where, "text", value, "none")
        elif key == "tls":
            if isinstance(value, bool):
                clean["tls"] = value
            else:
                problem(log, path, where, "true or false", value, "false")
        elif key == "receipts":
            if is_hex_key(value):
                clean["receipts"] = value
            elif value is not None:
                problem(log, path, where, "a receipt key as 64 hex digits", value, "PUBACK only")
        else:
            _unknown(log, path, where, BROKER_KEYS[1:])
    bad_tls = _check_tls(clean)
    if bad_tls:
        # TLS that cannot verify the broker is refused, not quietly downgraded: no vendor endpoint
        log("%s: vendor.%s: expected %s, found %s; cannot run" % ((path,) + bad_tls))
        return None
    return clean


def _check_wifi(log, path, wifi):
    if wifi is None:
        return {}
    if (
        isinstance(wifi, dict)
        and isinstance(wifi.get("ssid"), str)
        and 0 < len(wifi["ssid"]) <= 32
        and isinstance(wifi.get("password", ""), str)
        and len(wifi.get("password", "")) <= 64
    ):
        return {"ssid": wifi["ssid"], "password": wifi.get("password", "")}
    shown = {"ssid": wifi.get("ssid")} if isinstance(wifi, dict) else wifi  # never log a password
    problem(log, path, "wifi", "a map with ssid (1..32 chars) and password (0..64)", shown, "no Wi-Fi")
    return {}


def _check_owner(log, path, owner):
    if owner is None or is_hex_key(owner):
        return owner
    problem(log, path, "owner", "an Ed25519 public key as 64 hex digits", owner, "no owner (unclaimed)")
    return None


def _check_release_keys(log, path, keys):
    """The vendor's release keys the device trusts (fp.ota); none: only its owner's releases."""
    if keys is None:
        return []
    if isinstance(keys, list) and len(keys) <= 4 and all(is_hex_key(key) for key in keys):
        return keys
    problem(log, path, "release_keys", "a list of up to 4 Ed25519 public keys as 64 hex digits", keys, "[]")
    return []


def check_provision(raw, port, log):
    """Return provision.json with every value usable, or None when the vendor endpoint is not.

    `port` is the board's MicroPython port ("esp32" or "unix"): the HTTP API is on by default on
    a board (port 80) and off on the unix port, where a test or the sim launcher picks a port.
    """
    path = PROVISION_FILE
    if not isinstance(raw, dict):
        log("%s: (whole file): expected a map with the vendor endpoint, found %s" % (path, _show(raw)))
        return None
    for key in raw:
        if key not in PROVISION_KEYS:
            _unknown(log, path, key, PROVISION_KEYS)
    vendor = _check_vendor(log, path, raw.get("vendor"))
    if vendor is None:
        return None
    return {
        "vendor": vendor,
        "wifi": _check_wifi(log, path, raw.get("wifi")),
        "owner": _check_owner(log, path, raw.get("owner")),
        "release_keys": _check_release_keys(log, path, raw.get("release_keys")),
        "claim_window_s": _int_setting(log, path, raw, "claim_window_s", 10, 3600, _DEFAULT_CLAIM_WINDOW_S),
        "http_port": _int_setting(log, path, raw, "http_port", 0, 65535, 80 if port == "esp32" else 0),
        "safe_mode_boots": _int_setting(log, path, raw, "safe_mode_boots", 2, 100, _DEFAULT_SAFE_MODE_BOOTS),
        "safe_mode_window_s": _int_setting(
            log, path, raw, "safe_mode_window_s", 60, 86400, _DEFAULT_SAFE_MODE_WINDOW_S
        ),
    }


def _check_sensor(log, path, index, sensor, types, names):
    where = "sensors[%d]" % index
    if not isinstance(sensor, dict):
        problem(log, path, where, "a map with name, type, interval_s", sensor, "no such sensor")
        return None
    name = sensor.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 32 or name in names:
        problem(
            log, path, where + ".name", "a name (1..32 chars) no other sensor has", name, "no such sensor"
        )
        return None
    kind = sensor.get("type")
    if kind not in types:
        problem(log, path, where + ".type", "one of " + ", ".join(types), kind, "no such sensor")
        return None
    clean = dict(sensor)
    interval = sensor.get("interval_s", _DEFAULT_INTERVAL_S)
    if (
        not isinstance(interval, (int, float))
        or isinstance(interval, bool)
        or not 0 < interval <= MAX_INTERVAL_S
    ):
        problem(log, path, where + ".interval_s", "seconds in (0, 86400]", interval, _DEFAULT_INTERVAL_S)
        interval = _DEFAULT_INTERVAL_S
    clean["interval_s"] = interval
    needs = sensor_types.TYPES[sensor["type"]][1]  # a known type by now
    if needs == "pin" and not is_int(sensor.get("pin"), 0, 48):
        problem(log, path, where + ".pin", "a GPIO number 0..48", sensor.get("pin"), "no such sensor")
        return None
    default_address = sensor_types.DEFAULT_I2C_ADDRESS
    if needs == "i2c" and not is_int(sensor.get("i2c_address", default_address), 0, 127):
        problem(
            log, path, where + ".i2c_address", "an I2C address 0..127", sensor["i2c_address"], default_address
        )
        clean["i2c_address"] = default_address
    return clean


def check_board(raw: object, log: "Callable[[str], object]") -> "dict[str, Any] | None":
    """Return board.json's name, port, pins, queue_slots and sensors, each usable; None when it is
    not a map."""
    path = BOARD_FILE
    if not isinstance(raw, dict):
        log("%s: (whole file): expected the board's data file, found %s" % (path, _show(raw)))
        return None
    # the keys the device reads; description, chip, sizes and the like are the host's (the file
    # keeps them): left out, they take no heap and no room in the checked copy (fp.checked)
    board = {"name": raw.get("name"), "port": raw.get("port")}
    if not isinstance(board.get("name"), str) or not board["name"]:
        problem(log, path, "name", "the board's name", board.get("name"), "'unknown'")
        board["name"] = "unknown"
    if board.get("port") not in sensor_types.PORTS:
        detected = "esp32" if sys.platform == "esp32" else "unix"
        problem(log, path, "port", "esp32 or unix", board.get("port"), detected + " (this interpreter)")
        board["port"] = detected
    pins = raw.get("pins")
    if not isinstance(pins, dict):
        if pins is not None:
            problem(log, path, "pins", "a map of GPIO numbers", pins, "no pins")
        pins = {}
    board["pins"] = {}
    for pin in PINS:
        value = pins.get(pin)
        if value is not None and not is_int(value, 0, 48):
            problem(log, path, "pins." + pin, "a GPIO number 0..48 or null", value, "null")
            value = None
        board["pins"][pin] = value
    board["queue_slots"] = _int_setting(
        log, path, raw, "queue_slots", _MIN_QUEUE_SLOTS, _MAX_QUEUE_SLOTS, DEFAULT_QUEUE_SLOTS
    )
    sensors = raw.get("sensors")
    if not isinstance(sensors, list):
        problem(log, path, "sensors", "a list of sensors", sensors, "no sensors")
        sensors = []
    types = sensor_types.for_port(board["port"])
    board["sensors"] = []
    names = []
    for index, sensor in enumerate(sensors):
        clean = _check_sensor(log, path, index, sensor, types, names)
        if clean is not None:
            names.append(clean["name"])
            board["sensors"].append(clean)
    return board


def check_config(raw, sensor_names, log):
    """Return config.json (destinations and intervals) with every entry usable.

    A destination entry that cannot be used is left out; when none is left, the vendor endpoint
    is used, which also keeps the owner's command path open (the vendor relays commands).
    """
    path = CONFIG_FILE
    vendor_only = [{"name": "vendor"}]
    config = {"destinations": vendor_only, "intervals": {}}
    if raw is None:
        return config  # first boot: no owner command has written it yet
    if not isinstance(raw, dict):
        problem(log, path, "(whole file)", "a map", raw, "the vendor only and the board's intervals")
        return config
    for key in raw:
        if key not in ("destinations", "intervals"):
            _unknown(log, path, key, ("destinations", "intervals"))
    specs = raw.get("destinations", vendor_only)
    if not isinstance(specs, list) or not specs:
        problem(log, path, "destinations", "a list of 1..4 destinations", specs, "the vendor only")
        specs = []
    elif len(specs) > MAX_DESTINATIONS:
        problem(log, path, "destinations", "at most 4 destinations", len(specs), "the first 4")
        specs = specs[:MAX_DESTINATIONS]
    destinations = []
    names = []
    for index, spec in enumerate(specs):
        found = destination_problem(spec, names)
        if found is not None:
            key, expected, value = found
            where = "destinations[%d].%s" % (index, key)
            problem(log, path, where, expected, value, "nothing (this destination left out)")
            continue
        names.append(spec["name"])
        destinations.append(spec)
    if destinations:
        config["destinations"] = destinations
    elif specs:
        log("%s: destinations: none is usable; using the vendor only" % path)
    intervals = raw.get("intervals", {})
    if not isinstance(intervals, dict):
        problem(log, path, "intervals", "a map of sensor name to seconds", intervals, "the board's intervals")
        intervals = {}
    for name in intervals:
        value = intervals[name]
        where = "intervals." + str(name)
        if name not in sensor_names:
            problem(log, path, where, "a fitted sensor", name, "nothing (ignored)")
        elif not is_int(value, 1, MAX_INTERVAL_S):
            problem(log, path, where, "an integer 1..86400", value, "the board's interval")
        else:
            config["intervals"][name] = value
    return config


def check_all(log):
    """The boot's full check of the flash files (fp.checked.load, when its copy does not match):
    return (board, provision, owner key, last command counter, config), or exit with one line when
    the device cannot run."""
    board = check_board(load(BOARD_FILE, log), log)
    provision = None
    if board is not None:
        provision = check_provision(load(PROVISION_FILE, log), board["port"], log)
    if board is None or provision is None:
        log("board.json and provision.json (with a vendor endpoint) are required in the flash root")
        sys.exit(1)
    names = [sensor["name"] for sensor in board["sensors"]]
    owner_key = load_owner(log, provision["owner"])
    last_counter = load_counter(log)
    config = check_config(load(CONFIG_FILE, log), names, log)
    return board, provision, owner_key, last_counter, config
