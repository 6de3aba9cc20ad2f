"""Routes: which readings go where, on which terms (pure: values in, values out).

A route's spec is the JSON {"destination": {...}, "devices": ["*"|id...], "metrics": ["*"|name...],
"mode": "in-addition-to"|"instead-of", "terms": {"recipient", "purpose", "expires_s",
"retention_days"}, "needs_agreement": bool} that validate() checks, the store keeps and the grant
signs; a stored route is a Route (that spec, typed, with its name, id and grant). A route that needs an agreement delivers only what an
agreement both parties signed carries (host_agent.terms, docs/agreements.md); until then its
forwards wait in the outbox. Every route needs one unless the owner states that the destination is
their own (`needs_agreement` false: no second party to agree), and a file route always is one. Validation happens once, here, when a route is created or changed: every
text has a length cap, every number is finite and in range, ports are 1-65535, webhooks are
http or https, and a file destination lies inside the agent's `files_dir`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from fp.ids import is_valid_id
from host_agent.errors import UserError

DESTINATION_TYPES = {
    "mqtt": {"host": str, "port": int, "topic_prefix": str, "username": str, "password": str},
    "webhook": {"url": str},
    "file": {"path": str},
    "homeassistant": {"host": str, "port": int, "discovery_prefix": str, "username": str, "password": str},
}
MODES = ("in-addition-to", "instead-of")
TERM_KEYS = {"recipient": str, "purpose": str, "expires_s": (int, float), "retention_days": (int, float)}
# A route name: also the name of its grant and of the audit entries about it
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_TEXT = {"recipient": 200, "purpose": 500, "url": 2048, "path": 1024, "host": 253}
MAX_TEXT_DEFAULT = 256  # every other text of a route (topic prefixes, user names, passwords, metrics)
MAX_LIST = 256  # devices or metrics of one route
MAX_EXPIRES_S = 2**53  # a time any clock can hold (float exactly, int64, CBOR)
MAX_RETENTION_DAYS = 36500
OWN_DESTINATION_TYPES = ("file",)  # always the owner's own: a file inside the agent's files_dir
SECRETS = ("password",)  # never in the audit nor in an API answer: only whether one is set


def validate_name(name: Any) -> str:
    """Return a route name made of the safe alphabet (letters, digits, '.', '_', '-'), or raise UserError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise UserError(
            f"route: name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit, found {shown}"
        )
    return name


def _text(where: str, key: str, value: str) -> None:
    """Refuse a text longer than its key's cap, or holding NUL (never echoed: it may be a secret)."""
    limit = MAX_TEXT.get(key, MAX_TEXT_DEFAULT)
    if len(value) > limit:
        raise UserError(f"route: {where}{key} is longer than {limit} characters ({len(value)})")
    if "\x00" in value:
        raise UserError(f"route: {where}{key} contains a NUL character")


def _file_path(path: str, files_dir: Path | None) -> str:
    """The absolute path a file destination writes, inside `files_dir`; or raise UserError."""
    if files_dir is None:  # a caller outside the agent (tests, bench) that checks paths itself
        return path
    folder = Path(files_dir).resolve()
    target = (folder / path).resolve()  # a relative path is inside the folder; `..` and links resolved
    if target == folder or not target.is_relative_to(folder):
        raise UserError(f"route: destination.path must be a file inside {folder} (files_dir), found {path!r}")
    return str(target)


def _table(value: object) -> dict[str, Any] | None:
    """`value` as a JSON object (a TOML table), or None when it is something else."""
    return cast("dict[str, Any]", value) if isinstance(value, dict) else None


def _list(value: object) -> list[Any] | None:
    """`value` as a JSON array, or None when it is something else."""
    return cast("list[Any]", value) if isinstance(value, list) else None


def _destination(found: object, files_dir: Path | None) -> dict[str, Any]:
    destination = _table(found)
    if destination is None or destination.get("type") not in DESTINATION_TYPES:
        raise UserError(f"route: destination.type must be one of {', '.join(DESTINATION_TYPES)}")
    kind: str = destination["type"]
    fields = DESTINATION_TYPES[kind]
    for key, value in destination.items():
        if key == "type":
            continue
        if key not in fields:
            raise UserError(f"route: destination.{key} is not a {kind} setting")
        if not isinstance(value, fields[key]) or isinstance(value, bool):
            shown = "a secret" if key in SECRETS else repr(value)[:80]  # never echo a password
            raise UserError(f"route: destination.{key} must be {fields[key].__name__}, found {shown}")
        if isinstance(value, str):
            _text("destination.", key, value)
    required = {"mqtt": ("host",), "webhook": ("url",), "file": ("path",), "homeassistant": ("host",)}
    for key in required[kind]:
        if key not in destination:
            raise UserError(f"route: destination.{key} is required for {kind}")
    destination = dict(destination)
    if "port" in destination and not 1 <= destination["port"] <= 65535:
        raise UserError(f"route: destination.port must be 1-65535, found {destination['port']}")
    if kind in ("mqtt", "homeassistant") and not destination["host"]:
        raise UserError("route: destination.host must not be empty")
    if kind == "webhook":
        url: str = destination["url"]
        try:
            parts = urlsplit(url)
            is_web = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            is_web = False
        if not is_web:
            raise UserError(f"route: destination.url must be an http:// or https:// URL, found {url[:80]!r}")
    if kind == "file":
        destination["path"] = _file_path(destination["path"], files_dir)
    return destination


def validate(spec: dict[str, Any], files_dir: Path | None = None) -> dict[str, Any]:
    """Return a normalised route spec or raise UserError naming the bad key.

    `files_dir`: the folder file destinations must lie in (the agent's `files_dir`); a relative
    path is taken inside it, and the spec holds the absolute path.
    """
    allowed = {"destination", "devices", "metrics", "mode", "terms", "needs_agreement"}
    for key in spec:
        if key not in allowed:
            raise UserError(f"route: unknown key {key!r} (expected {', '.join(sorted(allowed))})")
    destination = _destination(spec.get("destination"), files_dir)
    devices = _list(spec.get("devices", ["*"]))
    if (
        devices is None
        or not 0 < len(devices) <= MAX_LIST
        or not all(d == "*" or is_valid_id(d) for d in devices)
    ):
        raise UserError(f"route: devices must be a list of up to {MAX_LIST} device ids or ['*']")
    metrics = _list(spec.get("metrics", ["*"]))
    if (
        metrics is None
        or not 0 < len(metrics) <= MAX_LIST
        or not all(isinstance(m, str) and 0 < len(m) <= MAX_TEXT_DEFAULT and "," not in m for m in metrics)
    ):
        raise UserError(f"route: metrics must be a list of up to {MAX_LIST} metric names or ['*']")
    mode = spec.get("mode", "in-addition-to")
    if mode not in MODES:
        raise UserError(f"route: mode must be one of {', '.join(MODES)}, found {mode!r}")
    terms = _table(spec.get("terms", {}))
    if terms is None:
        raise UserError("route: terms must be a table")
    for key, value in terms.items():
        if key not in TERM_KEYS:
            raise UserError(f"route: terms.{key} is unknown (expected {', '.join(TERM_KEYS)})")
        if not isinstance(value, TERM_KEYS[key]) or isinstance(value, bool):
            raise UserError(f"route: terms.{key} has the wrong type: {repr(value)[:80]}")
        if isinstance(value, str):
            _text("terms.", key, value)
        elif not math.isfinite(value) or value < 0:
            raise UserError(f"route: terms.{key} must be a finite number, not negative, found {value!r}")
        elif key == "expires_s" and value > MAX_EXPIRES_S:
            raise UserError(f"route: terms.expires_s must be a time in seconds up to 2**53, found {value!r}")
        elif key == "retention_days" and value > MAX_RETENTION_DAYS:
            raise UserError(
                f"route: terms.retention_days must be at most {MAX_RETENTION_DAYS}, found {value!r}"
            )
    needs_agreement = spec.get("needs_agreement")
    if needs_agreement is None:  # no stream to a second party without an agreement it signed
        needs_agreement = destination["type"] not in OWN_DESTINATION_TYPES
    if not isinstance(needs_agreement, bool):
        raise UserError(f"route: needs_agreement must be true or false, found {needs_agreement!r}")
    return {
        "destination": destination,
        "devices": devices,
        "metrics": metrics,
        "mode": mode,
        "terms": terms,
        "needs_agreement": needs_agreement,
    }


def without_secrets(spec: dict[str, Any], before: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec as the audit and the API show it: each secret replaced by `has_<secret>: true`.

    With `before` (the spec it replaces), `<secret>_changed` says whether the value changed:
    the record tells that a secret was set or changed, never what it is.
    """
    destination = dict(spec.get("destination", {}))
    old = (before or {}).get("destination", {})
    for key in SECRETS:
        value = destination.pop(key, None)
        if value is not None:
            destination["has_" + key] = True
        if before is not None:
            destination[key + "_changed"] = value != old.get(key)
    return dict(spec, destination=destination)


@dataclass(slots=True, frozen=True)
class Route:
    """A route: its validated spec (validate()) typed, its name and, once stored, its id and grant."""

    name: str
    destination: dict[str, Any]  # one DESTINATION_TYPES kind's settings, as validate() checked them
    devices: list[str] = field(default_factory=lambda: ["*"])
    metrics: list[str] = field(default_factory=lambda: ["*"])
    mode: str = "in-addition-to"
    terms: dict[str, Any] = field(default_factory=dict[str, Any])  # TERM_KEYS
    needs_agreement: bool = False
    id: int = 0  # 0: not stored (yet)
    created: float = 0.0
    is_active: bool = True
    grant_hex: str | None = None

    @classmethod
    def of(
        cls,
        name: str,
        spec: Mapping[str, Any],
        *,
        id: int = 0,  # noqa: A002 - the column's name
        created: float = 0.0,
        is_active: bool = True,
        grant_hex: str | None = None,
    ) -> Route:
        """The route `name` of a spec validate() returned (or the store kept: what an older agent
        left out takes its default)."""
        return cls(
            name,
            dict(spec["destination"]),
            list(spec.get("devices", ["*"])),
            list(spec.get("metrics", ["*"])),
            spec.get("mode", "in-addition-to"),
            dict(spec.get("terms", {})),
            bool(spec.get("needs_agreement", False)),
            id,
            created,
            is_active,
            grant_hex,
        )

    def spec(self) -> dict[str, Any]:
        """The spec as validate() returns it, the store keeps it and the grant signs it."""
        return {
            "destination": dict(self.destination),
            "devices": list(self.devices),
            "metrics": list(self.metrics),
            "mode": self.mode,
            "terms": dict(self.terms),
            "needs_agreement": self.needs_agreement,
        }

    def shows_device(self, device_id: str) -> bool:
        """True when the route names this device, or every device ("*")."""
        return "*" in self.devices or device_id in self.devices


def is_expired(route: Route, now_s: float | None = None) -> bool:
    expires = route.terms.get("expires_s")
    return expires is not None and (now_s if now_s is not None else time.time()) >= expires


def matches(route: Route, device_id: str, metric_names: list[str], now_s: float) -> bool:
    """True when this route carries a reading of `device_id` with these metrics at `now_s`.

    A forward is the whole signed reading (a signature cannot be cut), so a route limited to some
    metrics carries only readings made of those metrics alone: nothing beyond what its share
    grant states ever reaches the recipient, and the grant's own check (Grant.covers) agrees.
    """
    if is_expired(route, now_s):
        return False
    if not route.shows_device(device_id):
        return False
    if "*" in route.metrics:
        return True
    return bool(metric_names) and all(name in route.metrics for name in metric_names)


def device_destinations(routes: list[Route], device_id: str, home: dict[str, Any]) -> list[dict[str, Any]]:
    """The set-destinations list a device should hold given the owner's routes.

    `home` is the owner's broker as the device reaches it. An active instead-of route for the
    device removes the vendor from the device itself (so the vendor really stops receiving); the
    agent then forwards to the route's destination. Otherwise the vendor stays and home is added.
    """
    is_instead = any(
        r.mode == "instead-of" and not is_expired(r) and r.shows_device(device_id) for r in routes
    )
    destinations: list[dict[str, Any]] = [] if is_instead else [{"name": "vendor"}]
    destinations.append(dict(home, name="home"))
    return destinations
