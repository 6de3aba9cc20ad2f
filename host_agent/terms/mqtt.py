"""First-party terms over MQTT: proffers and terminations to a recipient's broker, answers back.

An owner's agent that reaches the vendor only through the vendor's broker (a relay account,
`broker.relay_brokers`) proffers there instead of to the vendor's API: `to` is then
`mqtt://HOST:PORT`, one of the relay brokers. The topics (docs/protocol.md section 7a):

    fp/v1/terms/policy                     retained, by the broker's own agent: what it accepts
    fp/v1/terms/<owner_id>/proffer         the owner's agent -> the recipient's agent
    fp/v1/terms/<owner_id>/termination     the owner's agent -> the recipient's agent
    fp/v1/terms/<owner_id>/answer          the recipient's agent -> the owner's agent
    fp/v1/terms/<owner_id>/termination-ack the recipient's agent -> the owner's agent

The messages are the very bytes the HTTP routes carry, checked by the same code (TermsDesk); the
broker's ACL lets a relay account publish only under its own owner id and read only its own
answers, and the recipient also refuses a proffer whose signer is not the owner its topic names.
Each message is acknowledged to the broker after its record is committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from fp.ids import is_valid_id
from host_agent.owner import Owner
from host_agent.terms.refused import Refused

if TYPE_CHECKING:
    from host_agent.bus.connection import Bus

log = logging.getLogger("firstparty.terms")
PREFIX = "fp/v1/terms/"
POLICY_TOPIC = PREFIX + "policy"
TO_RECIPIENT = ("proffer", "termination")
TO_OWNER = ("answer", "termination-ack")
SCHEME = "mqtt://"
POLICY_WAIT_S = 5.0


class Auditor(Protocol):
    """The running agent, as far as the courier needs it: its audit log."""

    async def audit(self, kind: str, data: dict[str, Any]) -> None: ...


class Desk(Protocol):
    """What the courier needs of the terms desk (host_agent.terms.desk.TermsDesk)."""

    @property
    def key(self) -> Owner: ...  # the agent's key: the owner id of its topics

    @property
    def agent(self) -> Auditor: ...

    def published(self) -> Mapping[str, object]: ...

    async def receive_proffer(self, data: bytes, topic_owner: str | None = None) -> bytes: ...

    async def receive_termination(self, data: bytes) -> bytes: ...

    async def take_mqtt_reply(self, kind: str, data: bytes) -> object: ...


def topic(owner_id: str, kind: str) -> str:
    if kind not in TO_RECIPIENT + TO_OWNER:
        raise ValueError(f"unknown terms topic kind {kind}")
    return f"{PREFIX}{owner_id}/{kind}"


def parse_topic(text: str) -> tuple[str, str] | None:
    """(owner id, kind) of a terms topic, or None for any other topic."""
    if not text.startswith(PREFIX):
        return None
    parts = text[len(PREFIX) :].split("/")
    if len(parts) != 2 or not is_valid_id(parts[0]) or parts[1] not in TO_RECIPIENT + TO_OWNER:
        return None
    return parts[0], parts[1]


def is_mqtt(peer: str) -> bool:
    return peer.startswith(SCHEME)


def recipient_filters() -> list[str]:
    """What an agent answers on its own broker: every owner's proffers and terminations."""
    return [PREFIX + "+/" + kind for kind in TO_RECIPIENT]


def owner_filters(owner_id: str) -> list[str]:
    """What an owner's agent reads on a relay broker: its own answers, and the recipient's policy."""
    return [topic(owner_id, kind) for kind in TO_OWNER] + [POLICY_TOPIC]


class TermsCourier:
    """Carries terms messages between the desk and the agent's buses (its own and its relays)."""

    def __init__(self, desk: Desk, own: Bus | None, relays: dict[str, Bus]):
        self.desk = desk
        self.own = own  # the broker this agent serves: proffers to it arrive here
        self.relays = relays  # "mqtt://host:port" -> the relay bus to that broker
        self.policies: dict[str, dict[str, object]] = {}  # peer -> the policy its broker holds (JSON)

    def publish_policy(self) -> None:
        """Tell every client of our broker (retained) which agreements this agent accepts."""
        if self.own is not None:
            self.own.publish(POLICY_TOPIC, json.dumps(self.desk.published()).encode(), retain=True)

    def bus_for(self, peer: str) -> Bus:
        from host_agent.errors import UserError

        bus = self.relays.get(peer)
        if bus is None:
            known = ", ".join(self.relays) or "none (broker.relay_brokers)"
            raise UserError(f"{peer} is not a relay broker of this agent; relay brokers: {known}")
        return bus

    async def recipient_key(self, peer: str) -> str:
        """The key id the recipient's agent published on its broker (retained; a relay that just
        connected gets it within moments, so this waits up to POLICY_WAIT_S for it)."""
        from host_agent.errors import UserError

        self.bus_for(peer)
        deadline = time.monotonic() + POLICY_WAIT_S
        while peer not in self.policies and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        key_id = self.policies.get(peer, {}).get("key_id")
        if not isinstance(key_id, str):
            raise UserError(f"no terms policy published on {peer} yet ({POLICY_TOPIC})")
        return key_id

    def send(self, peer: str, kind: str, data: bytes) -> None:
        self.bus_for(peer).publish(topic(self.desk.key.owner_id, kind), data)

    async def on_message(self, bus: Bus, text: str, payload: bytes) -> None:
        """A terms message arrived on `bus`; its record is committed when this returns."""
        if text == POLICY_TOPIC:
            peer = next((p for p, b in self.relays.items() if b is bus), None)
            try:
                published = json.loads(payload)
            except ValueError:
                published = None
            if peer is not None and isinstance(published, dict):
                self.policies[peer] = cast(
                    "dict[str, object]", published
                )  # JSON from the broker: read key by key
            return
        found = parse_topic(text)
        if found is None:
            return
        owner_id, kind = found
        try:
            if kind == "proffer" and bus is self.own:
                answer = await self.desk.receive_proffer(payload, owner_id)
                bus.publish(topic(owner_id, "answer"), answer)
            elif kind == "termination" and bus is self.own:
                ack = await self.desk.receive_termination(payload)
                bus.publish(topic(owner_id, "termination-ack"), ack)
            elif kind in TO_OWNER and owner_id == self.desk.key.owner_id and bus is not self.own:
                await self.desk.take_mqtt_reply(kind, payload)
        except Refused as error:
            log.warning("terms %s on %s refused: %s", kind, text, error)
            await self.desk.agent.audit(
                "terms-refused", {"topic": text, "why": f"{error.reason}: {error.detail}"}
            )
