"""The terms messages as typed values: the seam between the agent and fp.terms.

fp.terms (the wire format, shared with the device and checked under both interpreters) signs and
checks proffers, answers, terminations and acknowledgements, and hands back maps. This module is
where those maps become frozen records, once, so the code above reads fields, not keys:

- `parse_*` checks a message as it arrives (fp.terms: signature, bindings) and returns a `Signed`;
- `read_*` reads a message the store holds (checked when it was stored) and returns a `Stamped`;
- `encode_*` signs one with the agent's key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

from fp import cbor, cose, messages, terms
from fp.errors import ProtocolError
from host_agent import wire
from host_agent.owner import Owner

__all__ = [
    "DECISIONS",
    "AnswerTerms",
    "ProfferTerms",
    "Signed",
    "Stamped",
    "digest",
    "encode_answer",
    "encode_proffer",
    "encode_termination",
    "encode_termination_ack",
    "parse_answer",
    "parse_proffer",
    "parse_termination",
    "parse_termination_ack",
    "read_answer",
    "read_named",
    "read_proffer",
    "read_stamp",
    "ref",
]

DECISIONS: tuple[str, ...] = terms.DECISIONS  # accept | alternative | decline
T = TypeVar("T")
Verify = Callable[[bytes, bytes, bytes], None]  # (public key, data, signature); raises if bad


class _FpTerms(Protocol):
    """fp.terms' functions as this module calls them: the firmware's code carries no annotations
    (it runs under MicroPython too), so their types are stated here, once."""

    def digest(self, data: bytes) -> bytes: ...

    def parse_proffer(self, data: bytes, verify: Verify) -> terms.Signed: ...

    def parse_answer(self, data: bytes, proffer: terms.Signed, verify: Verify) -> terms.Signed: ...

    def parse_termination(self, data: bytes, proffer: terms.Signed, verify: Verify) -> terms.Signed: ...

    def parse_termination_ack(
        self, data: bytes, termination: terms.Signed, answer: terms.Signed, verify: Verify
    ) -> terms.Signed: ...

    def encode_proffer(
        self,
        sign: Callable[[bytes], bytes],
        owner_public_key: bytes,
        nonce: bytes,
        time_s: int,
        body: dict[str, object],
    ) -> bytes: ...

    def encode_answer(
        self,
        sign: Callable[[bytes], bytes],
        public_key: bytes,
        proffer_bytes: bytes,
        decision: str,
        time_s: int,
        alternative: tuple[str, int] | None = None,
        reason: str = "",
    ) -> bytes: ...

    def encode_termination(
        self,
        sign: Callable[[bytes], bytes],
        owner_public_key: bytes,
        proffer_bytes: bytes,
        time_s: int,
        reason: str = "",
    ) -> bytes: ...

    def encode_termination_ack(
        self, sign: Callable[[bytes], bytes], public_key: bytes, termination_bytes: bytes, time_s: int
    ) -> bytes: ...


_fp: _FpTerms = terms


def digest(data: bytes) -> bytes:
    """The SHA-256 by which a message names another (and the store finds a record by its proffer)."""
    return _fp.digest(data)


def ref(agreement_id: str, version: int) -> str:
    """The roster ref of an agreement: `service-only@1`."""
    return f"{agreement_id}@{version}"


def _text(body: Mapping[str, object], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ProtocolError("malformed", f"{key} must be text")
    return value


def _count(body: Mapping[str, object], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError("malformed", f"{key} must be an integer")
    return value


def _names(body: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = _array(body.get(key))
    if value is None:
        raise ProtocolError("malformed", f"{key} must be a list of names")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ProtocolError("malformed", f"{key} must be a list of names")
        names.append(item)
    return tuple(names)


def _array(value: object) -> list[object] | None:
    """A decoded CBOR array, its items still to be checked one by one; None for anything else."""
    return cast("list[object]", value) if isinstance(value, list) else None


def _ref(value: object, key: str) -> tuple[str, int]:
    items = _array(value)
    if items is not None and len(items) == 2:
        agreement_id, version = items
        if isinstance(agreement_id, str) and isinstance(version, int) and not isinstance(version, bool):
            return agreement_id, version
    raise ProtocolError("malformed", f"{key} must be [id, version]")


@dataclass(slots=True, frozen=True)
class ProfferTerms:
    """What a proffer's payload says: the roster entry it binds, and the terms of the share."""

    agreement_id: str
    version: int
    digest: bytes  # SHA-256 of the roster entry's canonical bytes
    recipient: str
    recipient_key: str | None  # the key id that alone may accept; None: whoever holds the proffer
    devices: tuple[str, ...]  # device ids, or "*"
    metrics: tuple[str, ...]  # metric names, or "*"
    purpose: str
    from_s: int
    until_s: int
    retention_days: int | None
    route: str  # the owner's route it covers ("" for none)

    @property
    def ref(self) -> str:
        return ref(self.agreement_id, self.version)

    def wire(self) -> dict[str, object]:
        """The payload map (docs/protocol.md section 7a; fp.terms.encode_proffer checks it)."""
        return {
            "agreement": [self.agreement_id, self.version],
            "digest": self.digest,
            "recipient": self.recipient,
            "recipient_key": self.recipient_key,
            "devices": list(self.devices),
            "metrics": list(self.metrics),
            "purpose": self.purpose,
            "from": self.from_s,
            "until": self.until_s,
            "retention_days": self.retention_days,
            "route": self.route,
        }

    @classmethod
    def from_wire(cls, body: Mapping[str, object]) -> ProfferTerms:
        """The terms of a payload map; ProtocolError('malformed') when a field has the wrong type
        (the full rules of a proffer are fp.terms', applied by parse_proffer and encode_proffer)."""
        agreement_id, version = _ref(body.get("agreement"), "agreement")
        digest, recipient_key, retention = (
            body.get("digest"),
            body.get("recipient_key"),
            body.get("retention_days"),
        )
        if not isinstance(digest, bytes):
            raise ProtocolError("malformed", "digest must be bytes")
        if recipient_key is not None and not isinstance(recipient_key, str):
            raise ProtocolError("malformed", "recipient_key must be an id or null")
        return cls(
            agreement_id,
            version,
            digest,
            _text(body, "recipient"),
            recipient_key,
            _names(body, "devices"),
            _names(body, "metrics"),
            _text(body, "purpose"),
            _count(body, "from"),
            _count(body, "until"),
            None if retention is None else _count(body, "retention_days"),
            _text(body, "route"),
        )


@dataclass(slots=True, frozen=True)
class AnswerTerms:
    """What an answer's payload says: the decision, the one alternative offered, and why."""

    decision: str  # one of DECISIONS
    alternative: tuple[str, int] | None  # [id, version] of the roster entry offered instead
    reason: str

    @property
    def alternative_ref(self) -> str | None:
        return ref(*self.alternative) if self.alternative else None

    @classmethod
    def from_wire(cls, body: Mapping[str, object]) -> AnswerTerms:
        decision = _text(body, "decision")
        if decision not in DECISIONS:
            raise ProtocolError("malformed", "decision must be accept, alternative or decline")
        alternative = body.get("alternative")
        return cls(
            decision, None if alternative is None else _ref(alternative, "alternative"), _text(body, "reason")
        )


@dataclass(slots=True, frozen=True)
class Stamped(Generic[T]):
    """A terms message as the store holds it: who signed it, when (iss, iat), and its payload."""

    signer_id: str
    time_s: int
    body: T


@dataclass(slots=True, frozen=True)
class Signed(Stamped[T]):
    """A terms message fp.terms checked on arrival: its exact bytes too, and fp's own value of it
    (what fp.terms' other parsers take: an answer is checked against its proffer's)."""

    raw: bytes
    nonce: bytes  # a proffer's 16-byte nonce (its cti); b"" for the other kinds
    checked: terms.Signed


def _message(data: bytes, kind: str) -> tuple[cose.Sign1, Mapping[str, object]]:
    message = messages.parse(bytes(data), kind)
    body = cbor.decode(message.payload)
    if not isinstance(body, dict):
        raise ProtocolError("malformed", f"a {kind} payload is a map")
    return message, cast("dict[str, object]", body)  # a decoded CBOR map, read field by field


def _stamp(message: cose.Sign1) -> tuple[str, int]:
    signer_id, time_s = message.claims.get(messages.ISS), message.claims.get(messages.IAT)
    if not isinstance(signer_id, str) or not isinstance(time_s, int):
        raise ProtocolError("malformed", "a terms message names its signer (iss) and time (iat)")
    return signer_id, time_s


def read_stamp(data: bytes, kind: str) -> Stamped[None]:
    """Who signed a stored message of `kind`, and when."""
    return Stamped(*_stamp(_message(data, kind)[0]), None)


# what each message names by its SHA-256: the proffer it answers or ends, the termination it acknowledges
_NAMES = {"answer": "proffer", "termination": "proffer", "termination-ack": "termination"}


def read_named(data: bytes, kind: str) -> bytes | None:
    """The digest a message of `kind` names (None when it names none), before it is checked: how
    the desk finds the record it belongs to."""
    named = _message(data, kind)[1].get(_NAMES[kind])
    return named if isinstance(named, bytes) else None


def read_proffer(data: bytes) -> Stamped[ProfferTerms]:
    message, body = _message(data, "proffer")
    return Stamped(*_stamp(message), ProfferTerms.from_wire(body))


def read_answer(data: bytes) -> Stamped[AnswerTerms]:
    message, body = _message(data, "answer")
    return Stamped(*_stamp(message), AnswerTerms.from_wire(body))


def _none(body: Mapping[str, object]) -> None:
    """The payload of a termination or its acknowledgement: nothing the agent reads but its digests."""


def _signed(
    data: bytes, kind: str, checked: terms.Signed, read: Callable[[Mapping[str, object]], T]
) -> Signed[T]:
    """What fp.terms checked as `checked`, read from its bytes into a typed value."""
    message, body = _message(data, kind)
    nonce = message.claims.get(messages.CTI) if kind == "proffer" else None
    return Signed(*_stamp(message), read(body), data, nonce if isinstance(nonce, bytes) else b"", checked)


def parse_proffer(data: bytes) -> Signed[ProfferTerms]:
    """A proffer checked (signed by the key it carries, its payload a proffer's); ProtocolError otherwise."""
    data = bytes(data)
    checked = _fp.parse_proffer(data, wire.nacl_verify)
    return _signed(data, "proffer", checked, ProfferTerms.from_wire)


def parse_answer(data: bytes, proffer: Signed[ProfferTerms]) -> Signed[AnswerTerms]:
    """An answer checked against the proffer it must answer (fp.terms.parse_answer)."""
    data = bytes(data)
    checked = _fp.parse_answer(data, proffer.checked, wire.nacl_verify)
    return _signed(data, "answer", checked, AnswerTerms.from_wire)


def parse_termination(data: bytes, proffer: Signed[ProfferTerms]) -> Signed[None]:
    """A termination of the agreement made from `proffer`, signed by its owner."""
    data = bytes(data)
    checked = _fp.parse_termination(data, proffer.checked, wire.nacl_verify)
    return _signed(data, "termination", checked, _none)


def parse_termination_ack(
    data: bytes, termination: Signed[None], answer: Signed[AnswerTerms]
) -> Signed[None]:
    """The acknowledgement of `termination`, signed by whoever signed `answer`."""
    data = bytes(data)
    checked = _fp.parse_termination_ack(data, termination.checked, answer.checked, wire.nacl_verify)
    return _signed(data, "termination-ack", checked, _none)


def encode_proffer(key: Owner, nonce: bytes, time_s: int, body: ProfferTerms) -> bytes:
    """The owner's signed proffer; ProtocolError when fp.terms refuses its terms."""
    return _fp.encode_proffer(key.sign, key.public, nonce, time_s, body.wire())


def encode_answer(
    key: Owner, proffer: bytes, decision: str, time_s: int, alternative: tuple[str, int] | None, reason: str
) -> bytes:
    return _fp.encode_answer(key.sign, key.public, proffer, decision, time_s, alternative, reason)


def encode_termination(key: Owner, proffer: bytes, time_s: int, reason: str) -> bytes:
    return _fp.encode_termination(key.sign, key.public, proffer, time_s, reason)


def encode_termination_ack(key: Owner, termination: bytes, time_s: int) -> bytes:
    return _fp.encode_termination_ack(key.sign, key.public, termination, time_s)
