"""Routes: which readings go where, on which terms (pure: values in, values out).

A route is a dict: {"destination": {...}, "devices": ["*"|id...], "metrics": ["*"|name...],
"mode": "in-addition-to"|"instead-of", "terms": {"recipient", "purpose", "expires_s",
"retention_days"}, "needs_agreement": bool}. A route that needs an agreement delivers only what an
agreement both parties signed carries (host_agent.terms, docs/agreements.md); until then its
forwards wait in the outbox. Validation happens once, here, when a route is created.
"""

from __future__ import annotations

import time
from typing import Any

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


def validate(spec: dict[str, Any]) -> dict[str, Any]:
    """Return a normalised route spec or raise UserError naming the bad key."""
    allowed = {"destination", "devices", "metrics", "mode", "terms", "needs_agreement"}
    for key in spec:
        if key not in allowed:
            raise UserError(f"route: unknown key {key!r} (expected {', '.join(sorted(allowed))})")
    destination = spec.get("destination")
    if not isinstance(destination, dict) or destination.get("type") not in DESTINATION_TYPES:
        raise UserError(f"route: destination.type must be one of {', '.join(DESTINATION_TYPES)}")
    fields = DESTINATION_TYPES[destination["type"]]
    for key, value in destination.items():
        if key == "type":
            continue
        if key not in fields:
            raise UserError(f"route: destination.{key} is not a {destination['type']} setting")
        if not isinstance(value, fields[key]) or isinstance(value, bool):
            raise UserError(f"route: destination.{key} must be {fields[key].__name__}, found {value!r}")
    required = {"mqtt": ("host",), "webhook": ("url",), "file": ("path",), "homeassistant": ("host",)}
    for key in required[destination["type"]]:
        if key not in destination:
            raise UserError(f"route: destination.{key} is required for {destination['type']}")
    devices = spec.get("devices", ["*"])
    if not isinstance(devices, list) or not devices or not all(d == "*" or is_valid_id(d) for d in devices):
        raise UserError("route: devices must be a list of device ids or ['*']")
    metrics = spec.get("metrics", ["*"])
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise UserError("route: metrics must be a list of metric names or ['*']")
    mode = spec.get("mode", "in-addition-to")
    if mode not in MODES:
        raise UserError(f"route: mode must be one of {', '.join(MODES)}, found {mode!r}")
    terms = spec.get("terms", {})
    if not isinstance(terms, dict):
        raise UserError("route: terms must be a table")
    for key, value in terms.items():
        if key not in TERM_KEYS:
            raise UserError(f"route: terms.{key} is unknown (expected {', '.join(TERM_KEYS)})")
        if not isinstance(value, TERM_KEYS[key]) or isinstance(value, bool):
            raise UserError(f"route: terms.{key} has the wrong type: {value!r}")
    needs_agreement = spec.get("needs_agreement", False)
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


def is_expired(route: dict[str, Any], now_s: float | None = None) -> bool:
    expires = route.get("terms", {}).get("expires_s")
    return expires is not None and (now_s if now_s is not None else time.time()) >= expires


def matches(route: dict[str, Any], device_id: str, metric_names: list[str], now_s: float) -> bool:
    """True when this route carries a reading of `device_id` with these metrics at `now_s`.

    A forward is the whole signed reading (a signature cannot be cut), so a route limited to some
    metrics carries only readings made of those metrics alone: nothing beyond what its share
    grant states ever reaches the recipient, and the grant's own check (Grant.covers) agrees.
    """
    if is_expired(route, now_s):
        return False
    if "*" not in route["devices"] and device_id not in route["devices"]:
        return False
    if "*" in route["metrics"]:
        return True
    return bool(metric_names) and all(name in route["metrics"] for name in metric_names)


def device_destinations(routes: list[dict[str, Any]], device_id: str, home: dict[str, Any]) -> list[dict]:
    """The set-destinations list a device should hold given the owner's routes.

    `home` is the owner's broker as the device reaches it. An active instead-of route for the
    device removes the vendor from the device itself (so the vendor really stops receiving); the
    agent then forwards to the route's destination. Otherwise the vendor stays and home is added.
    """
    is_instead = any(
        r["mode"] == "instead-of" and not is_expired(r) and ("*" in r["devices"] or device_id in r["devices"])
        for r in routes
    )
    destinations = [] if is_instead else [{"name": "vendor"}]
    destinations.append(dict(home, name="home"))
    return destinations
