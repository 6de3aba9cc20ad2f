"""Share grants: the owner's signed statement of the terms under which a recipient gets a stream.

A grant is a COSE_Sign1 (content type fp.messages.CT_GRANT = 65206) signed with the owner key.
Protected header: {1: -8, 3: 65206, 15: {1 iss: owner_id, 6 iat, 4 exp?}}. Payload (a map):
{"recipient": text, "devices": [id | "*"], "metrics": [name | "*"], "purpose": text,
"retention_days": number | null, "route": text}. A recipient checks it with the owner's public
key and then checks each forwarded reading against the device card (docs/protocol.md 7a).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from fp import cbor, cose, messages
from fp.errors import ProtocolError
from fp.ids import id_from_public_key
from host_agent import wire


@dataclass
class Grant:
    owner_id: str
    recipient: str
    devices: list[str]
    metrics: list[str]
    purpose: str
    retention_days: float | None
    issued_s: int
    expires_s: int | None
    route: str

    def covers(self, device_id: str, metric_names: list[str], now_s: float | None = None) -> bool:
        """True when a reading of `device_id` with these metrics falls within the grant's terms."""
        now_s = time.time() if now_s is None else now_s
        if self.expires_s is not None and now_s >= self.expires_s:
            return False
        if "*" not in self.devices and device_id not in self.devices:
            return False
        return "*" in self.metrics or all(name in self.metrics for name in metric_names)


def encode_grant(
    sign: Callable[[bytes], bytes],
    owner_public_key: bytes,
    route_name: str,
    spec: dict[str, Any],
    issued_s: int,
) -> bytes:
    """Sign a grant for a route spec (host_agent.routes.rules.validate form)."""
    terms: dict[str, Any] = spec.get("terms", {})
    claims: dict[int, Any] = {messages.ISS: id_from_public_key(owner_public_key), messages.IAT: int(issued_s)}
    if terms.get("expires_s") is not None:
        claims[messages.EXP] = int(terms["expires_s"])
    body: dict[str, Any] = {
        "recipient": terms.get("recipient", ""),
        "devices": list(spec["devices"]),
        "metrics": list(spec["metrics"]),
        "purpose": terms.get("purpose", ""),
        "retention_days": terms.get("retention_days"),
        "route": route_name,
    }
    if isinstance(body["retention_days"], float) and body["retention_days"].is_integer():
        body["retention_days"] = int(body["retention_days"])
    header: dict[int, Any] = {
        cose.H_ALG: cose.ALG_EDDSA,
        cose.H_CONTENT_TYPE: messages.CT_GRANT,
        cose.H_CWT_CLAIMS: claims,
    }
    return cose.sign1(sign, header, cbor.encode(body))


def parse_grant(data: bytes, owner_public_key: bytes) -> Grant:
    """Check a grant against the owner's key; raise ProtocolError with a reason otherwise."""
    message = messages.parse(data, "grant")
    claims = message.claims
    if claims.get(messages.ISS) != id_from_public_key(owner_public_key):
        raise ProtocolError("not-owner", "grant not issued by this owner")
    cose.verify_sign1(message, owner_public_key, wire.nacl_verify)
    decoded = cbor.decode(message.payload)
    if not isinstance(decoded, dict):
        raise ProtocolError("malformed", "grant payload must be a map")
    body = cast("dict[str, Any]", decoded)
    for key, kind in (
        ("recipient", str),
        ("purpose", str),
        ("route", str),
        ("devices", list),
        ("metrics", list),
    ):
        if not isinstance(body.get(key), kind):
            raise ProtocolError("malformed", f"grant {key} has the wrong type")
    issued = claims.get(messages.IAT)
    expires = claims.get(messages.EXP)
    if not isinstance(issued, int) or (expires is not None and not isinstance(expires, int)):
        raise ProtocolError("malformed", "grant iat/exp must be integers")
    return Grant(
        claims[messages.ISS],
        body["recipient"],
        body["devices"],
        body["metrics"],
        body["purpose"],
        body.get("retention_days"),
        issued,
        expires,
        body["route"],
    )
