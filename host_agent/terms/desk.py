"""The agent's side of first-party terms: proffer, answer, terminate, and hold a stream until agreed.

Every agent plays both parts with its own key (the `owner_key` file): as first party it proffers
the owner's terms to a recipient's agent (`POST {its API}/terms/proffers`, or over the recipient's
broker: host_agent.terms.mqtt) or writes them to a file for a recipient running nothing of ours; as second party it answers proffers by its published
policy (`/.well-known/firstparty-terms`). The decisions are host_agent.terms.policy's; the
records are host_agent.terms.records'. See docs/agreements.md.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from typing_extensions import TypedDict  # pydantic reads a TypedDict of typing's only from Python 3.12

from fp import messages
from fp.errors import ProtocolError
from host_agent.commands.control import CommandResult
from host_agent.config import Config
from host_agent.errors import UserError
from host_agent.outbox.forward import Forward
from host_agent.outbox.queue import Outbox
from host_agent.owner import Owner
from host_agent.routes.rules import Route
from host_agent.store.base import Store
from host_agent.store.records import AgreementRecord
from host_agent.terms import mqtt, policy, records, roster, signed
from host_agent.terms.refused import Refused
from host_agent.terms.signed import ProfferTerms
from host_agent.terms.view import AgreementView, describe

__all__ = ["COSE_TYPE", "DeskAgent", "ProfferRequest", "PublishedTerms", "Refused", "TermsDesk"]

log = logging.getLogger("firstparty.terms")
COSE_TYPE = 'application/cose; cose-type="cose-sign1"'
MAX_FROM_ONE_OWNER = 1000  # records a second party keeps for one owner: a flood of proffers is bounded
MAX_ANSWERED = 100_000  # and for all owners together (an owner id is only a fresh key away)
DEFAULT_DAYS = 365


class DeskAgent(Protocol):
    """What the desk needs of the running agent (host_agent.service.Agent)."""

    store: Store
    owner: Owner  # the agent's own key: it signs proffers and answers alike
    config: Config

    @property
    def outbox(self) -> Outbox | None: ...

    async def audit(self, kind: str, data: dict[str, Any]) -> None: ...

    def home_destination(self, device_id: str) -> dict[str, Any]: ...

    async def command(
        self, device_id: str, op: str, args: dict[str, Any], timeout_s: float | None = None
    ) -> CommandResult: ...


class PublishedTerms(TypedDict):
    """What an agent tells the world it accepts (/.well-known/firstparty-terms, JSON)."""

    key_id: str
    public_key_hex: str
    role: str
    roster: policy.RosterNameOut
    accepts: list[policy.EntryOut]
    alternative: policy.EntryOut | None
    proffers: str
    terminations: str


@dataclass(slots=True, frozen=True)
class ProfferRequest:
    """What the owner asks for; unset parameters come from the route, when one is named."""

    agreement: str
    to: str | None = None  # the recipient agent's API, or mqtt://its broker; None: a file (offline)
    route: str | None = None
    recipient: str | None = None
    devices: list[str] | None = None
    metrics: list[str] | None = None
    purpose: str | None = None
    from_s: int | None = None
    until_s: int | None = None
    retention_days: int | None = None


class TermsDesk:
    """First-party terms for one agent: its policy, its records, and the outbox's gate."""

    def __init__(self, agent: DeskAgent) -> None:
        self.agent = agent
        self.store = agent.store
        self.key = agent.owner  # this agent's own key signs proffers and answers alike
        self.roster = roster.load()
        config = agent.config.terms
        roster.check_terms_config("config", config)
        accepts = config.accepts
        if accepts is None:
            accepts = [roster.BASELINE] if agent.config.role == "vendor" else []
        self.policy = policy.policy_from(list(accepts), config.alternative, self.roster)
        self.http = httpx.AsyncClient(timeout=10.0)
        self.tasks: set[asyncio.Task[None]] = set()
        self.max_from_one_owner, self.max_answered = MAX_FROM_ONE_OWNER, MAX_ANSWERED
        self.courier: mqtt.TermsCourier | None = None  # set by the service once its buses run

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.aclose()

    def published(self) -> PublishedTerms:
        """What this agent tells the world it accepts (/.well-known/firstparty-terms)."""
        shown = self.policy.published(self.roster)
        return {
            "key_id": self.key.owner_id,
            "public_key_hex": self.key.public.hex(),
            "role": self.agent.config.role,
            "roster": shown["roster"],
            "accepts": shown["accepts"],
            "alternative": shown["alternative"],
            "proffers": "/terms/proffers",
            "terminations": "/terms/terminations",
        }

    # --- first party: the owner's agent ------------------------------------------------------

    def _courier(self) -> mqtt.TermsCourier:
        if self.courier is None:
            raise UserError("terms over MQTT need the agent's buses running")
        return self.courier

    async def _recipient_key(self, url: str) -> str:
        """The key id a recipient's agent publishes: the proffer names it, so no other key can accept."""
        if mqtt.is_mqtt(url):
            return await self._courier().recipient_key(url)
        try:
            response = await self.http.get(url.rstrip("/") + "/.well-known/firstparty-terms")
            response.raise_for_status()
            key_id = response.json()["key_id"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"cannot read the terms policy of {url}: {error}") from None
        return str(key_id)

    async def _terms(
        self, request: ProfferRequest, agreement: roster.Agreement, recipient_key: str | None
    ) -> ProfferTerms:
        """The proffer's terms: the request's, and what it leaves out from its route."""
        route: Route | None = None
        if request.route:
            routes = {r.name: r for r in await asyncio.to_thread(self.store.routes)}
            if request.route not in routes:
                raise UserError(f"no route {request.route!r}: see `firstparty routes list`")
            route = routes[request.route]
        route_terms = route.terms if route else {}
        # a route's agreement starts, unless told otherwise, when the route did: the forwards it
        # held while the proffer awaited its answer are then the ones the agreement carries
        now = int(route.created) if route and route.created else int(time.time())
        from_s = request.from_s if request.from_s is not None else now
        until = request.until_s or route_terms.get("expires_s") or from_s + DEFAULT_DAYS * 86400
        retention = (
            request.retention_days
            if request.retention_days is not None
            else route_terms.get("retention_days")
        )
        return ProfferTerms(
            agreement_id=agreement.id,
            version=agreement.version,
            digest=agreement.digest,
            recipient=request.recipient
            if request.recipient is not None
            else str(route_terms.get("recipient", "")),
            recipient_key=recipient_key,
            devices=tuple(request.devices or (route.devices if route else None) or ["*"]),
            metrics=tuple(request.metrics or (route.metrics if route else None) or ["*"]),
            purpose=request.purpose if request.purpose is not None else str(route_terms.get("purpose", "")),
            from_s=int(from_s),
            until_s=int(until),
            retention_days=None if retention is None else int(retention),
            route=request.route or "",
        )

    async def proffer(self, request: ProfferRequest) -> AgreementView:
        """Sign the owner's proffer, record it, and deliver it when the recipient has an agent."""
        agreement = self.roster.get(request.agreement)
        recipient_key = await self._recipient_key(request.to) if request.to else None
        body = await self._terms(request, agreement, recipient_key)
        nonce = os.urandom(16)
        try:
            policy.check_proffer(self.roster, body)
            data = signed.encode_proffer(self.key, nonce, int(time.time()), body)
        except ProtocolError as error:
            raise UserError(f"{agreement.ref} does not allow these terms: {error.detail}") from None
        record = records.new(
            nonce.hex(), "first", request.to or "", body.route, "proffered", data, self.key.owner_id
        )
        await asyncio.to_thread(records.add, self.store, record, "terms-proffered", agreement=agreement.ref)
        if request.to:
            return await self.deliver(record.id)
        return describe(record)

    async def deliver(self, agreement_id: str) -> AgreementView:
        """Send a proffer to the recipient's agent and take its answer from the response (over
        MQTT the answer comes later, on the owner's answer topic: take_mqtt_reply)."""
        record = await self._own(agreement_id)
        if mqtt.is_mqtt(record.peer):
            self._courier().send(record.peer, "proffer", record.proffer)
            return describe(record)
        try:
            response = await self.http.post(
                record.peer.rstrip("/") + "/terms/proffers",
                content=record.proffer,
                headers={"content-type": COSE_TYPE},
            )
        except httpx.HTTPError as error:
            raise UserError(
                f"proffer {agreement_id} recorded but not delivered to {record.peer}: {error}"
            ) from None
        if response.status_code != 200:
            raise UserError(
                f"proffer {agreement_id} recorded; {record.peer} refused it: HTTP {response.status_code} {response.text[:200]}"
            )
        return await self.take_answer(agreement_id, response.content)

    async def _own(self, agreement_id: str) -> AgreementRecord:
        record = await asyncio.to_thread(records.get, self.store, agreement_id)
        if record is None or record.side != "first":
            raise Refused(404, "unknown", f"no agreement {agreement_id} proffered by this agent")
        return record

    async def take_answer(self, agreement_id: str, data: bytes) -> AgreementView:
        """Check the recipient's answer against our proffer; record it; act on it."""
        row = await self._own(agreement_id)
        proffer = signed.parse_proffer(row.proffer)
        try:
            answer = signed.parse_answer(bytes(data), proffer)
            if row.state != "proffered":
                raise ProtocolError("replay", f"agreement {agreement_id} was already answered ({row.state})")
        except ProtocolError as error:
            await self.agent.audit(
                "terms-answer-refused",
                {"agreement": agreement_id, "reason": error.reason, "detail": error.detail},
            )
            raise Refused(409 if error.reason == "replay" else 400, error.reason, error.detail) from None
        decision = answer.body.decision
        state = records.STATE_OF[decision]
        extra: dict[str, object] = {"recipient_id": answer.signer_id, "reason": answer.body.reason}
        alternative = answer.body.alternative_ref
        is_refused = False
        if alternative is not None:
            extra["alternative"] = alternative
            if alternative not in self.policy.accepts:
                state, is_refused = "refused", True
                extra["why"] = f"{alternative} is not one the owner accepts"
        updated = await asyncio.to_thread(
            records.update,
            self.store,
            agreement_id,
            {"state": state, "answer": bytes(data)},
            "terms-" + state,
            "proffered",
            **extra,
        )
        if updated is None:
            raise Refused(409, "replay", f"agreement {agreement_id} was answered meanwhile")
        log.info("agreement %s: %s by %s", agreement_id, state, answer.signer_id)
        if state == "accepted" and self.agent.outbox:
            self.agent.outbox.wake.set()
        result = describe(updated)
        if alternative is not None and not is_refused:
            # the owner accepts the counter-offer: proffer it, same parameters, to the same agent
            body = proffer.body
            again = ProfferRequest(
                alternative,
                row.peer or None,
                body.route or None,
                body.recipient,
                list(body.devices),
                list(body.metrics),
                body.purpose,
                body.from_s,
                body.until_s,
                body.retention_days,
            )
            result["followed_by"] = await self.proffer(again)
        if row.route == "" and row.peer == self.agent.config.terms.vendor_api:
            await self._vendor_answered(result, state)
        return result

    async def terminate(self, agreement_id: str, reason: str) -> AgreementView:
        """End an accepted agreement now: sign the termination, record it, and tell the recipient."""
        row = await self._own(agreement_id)
        if row.state != "accepted":
            raise Refused(409, "replay", f"agreement {agreement_id} is {row.state}, not accepted")
        data = signed.encode_termination(self.key, row.proffer, int(time.time()), reason)
        updated = await asyncio.to_thread(
            records.update,
            self.store,
            agreement_id,
            {"state": "terminated", "termination": data},
            "terms-terminated",
            "accepted",
        )
        if updated is None:
            raise Refused(409, "replay", f"agreement {agreement_id} changed meanwhile")
        if self.agent.outbox:
            self.agent.outbox.wake.set()
        if not row.peer:
            return describe(updated)
        if mqtt.is_mqtt(row.peer):
            self._courier().send(row.peer, "termination", data)
            return describe(updated)
        try:
            response = await self.http.post(
                row.peer.rstrip("/") + "/terms/terminations",
                content=data,
                headers={"content-type": COSE_TYPE},
            )
        except httpx.HTTPError as error:
            log.warning("termination of %s not delivered: %s", agreement_id, error)
            return describe(updated)
        if response.status_code != 200:
            log.warning("termination of %s refused: HTTP %s", agreement_id, response.status_code)
            return describe(updated)
        return await self.take_termination_ack(agreement_id, response.content)

    async def take_termination_ack(self, agreement_id: str, data: bytes) -> AgreementView:
        row = await self._own(agreement_id)
        if row.termination is None or row.answer is None:
            raise Refused(409, "wrong-proffer", f"agreement {agreement_id} has no termination to acknowledge")
        proffer = signed.parse_proffer(row.proffer)
        answer = signed.parse_answer(row.answer, proffer)
        termination = signed.parse_termination(row.termination, proffer)
        try:
            ack = signed.parse_termination_ack(bytes(data), termination, answer)
            if row.termination_ack is not None:
                raise ProtocolError("replay", "the termination was already acknowledged")
        except ProtocolError as error:
            raise Refused(409 if error.reason == "replay" else 400, error.reason, error.detail) from None
        updated = await asyncio.to_thread(
            records.update,
            self.store,
            agreement_id,
            {"termination_ack": bytes(data)},
            "terms-termination-acknowledged",
            "terminated",
            acknowledged_by=ack.signer_id,
        )
        if updated is None:
            raise Refused(409, "replay", f"agreement {agreement_id} changed meanwhile")
        return describe(updated)

    # --- second party: any agent, the vendor's in particular ----------------------------------

    async def take_mqtt_reply(self, kind: str, data: bytes) -> AgreementView:
        """An answer or a termination acknowledgement that came over MQTT: find what it answers."""
        try:
            named = signed.read_named(bytes(data), kind)
        except ProtocolError as error:
            raise Refused(400, error.reason, error.detail) from None
        if kind == "answer":
            row = None if named is None else await asyncio.to_thread(records.by_digest, self.store, named)
            if row is not None and row.side == "first":
                return await self.take_answer(row.id, data)
        elif named is not None:
            for row in await asyncio.to_thread(records.all_records, self.store):
                if row.side == "first" and row.termination and signed.digest(row.termination) == named:
                    return await self.take_termination_ack(row.id, data)
        raise Refused(400, "wrong-proffer", f"no {kind} of ours is answered by it")

    async def receive_proffer(self, data: bytes, topic_owner: str | None = None) -> bytes:
        """Answer a proffer by this agent's policy; the answer is recorded before it is returned.

        `topic_owner`: over MQTT, the owner id its topic names, which must be the signer's."""
        try:
            proffer = signed.parse_proffer(bytes(data))
            if topic_owner is not None and proffer.signer_id != topic_owner:
                raise ProtocolError("not-owner", f"signed by {proffer.signer_id}, sent as {topic_owner}")
        except ProtocolError as error:
            raise Refused(400, error.reason, error.detail) from None
        same = await asyncio.to_thread(records.by_digest, self.store, signed.digest(proffer.raw))
        if same is not None and same.side == "second" and same.answer is not None:
            return same.answer  # the owner's retry of a proffer we answered: the same answer
        agreement_id = proffer.nonce.hex()
        if await asyncio.to_thread(records.get, self.store, agreement_id) is not None:
            raise Refused(409, "replay", f"proffer id {agreement_id} is already used by another proffer")
        from_owner, answered = await asyncio.to_thread(records.counts, self.store, proffer.signer_id)
        if from_owner >= self.max_from_one_owner or answered >= self.max_answered:
            raise Refused(
                429, "too-many", f"{answered} proffers on record, {from_owner} from {proffer.signer_id}"
            )
        decision = policy.evaluate(self.policy, self.roster, proffer.body)
        answer = signed.encode_answer(
            self.key,
            proffer.raw,
            decision.decision,
            int(time.time()),
            decision.alternative,
            decision.reason,
        )
        state = records.STATE_OF[decision.decision]
        record = records.new(
            agreement_id,
            "second",
            proffer.signer_id,
            proffer.body.route,
            state,
            proffer.raw,
            proffer.signer_id,
            answer,
        )
        await asyncio.to_thread(records.add, self.store, record, "terms-" + state, reason=decision.reason)
        log.info("proffer %s from %s: %s (%s)", agreement_id, proffer.signer_id, state, decision.reason)
        return answer

    async def receive_termination(self, data: bytes) -> bytes:
        """Record the owner's early end of an agreement we accepted; return our signed acknowledgement."""
        try:
            named = signed.read_named(bytes(data), "termination")
            row = None if named is None else await asyncio.to_thread(records.by_digest, self.store, named)
            if row is None or row.side != "second":
                raise ProtocolError("wrong-proffer", "no agreement of ours is made from that proffer")
            proffer = signed.parse_proffer(row.proffer)
            signed.parse_termination(bytes(data), proffer)
            if row.termination is not None:
                if row.termination == bytes(data) and row.termination_ack is not None:
                    return row.termination_ack  # the owner's retry: the same acknowledgement
                raise ProtocolError("replay", "the agreement was already terminated")
            if row.state != "accepted":
                raise ProtocolError("wrong-proffer", f"the agreement is {row.state}, not accepted")
        except ProtocolError as error:
            raise Refused(409 if error.reason == "replay" else 400, error.reason, error.detail) from None
        ack = signed.encode_termination_ack(self.key, bytes(data), int(time.time()))
        updated = await asyncio.to_thread(
            records.update,
            self.store,
            row.id,
            {"state": "terminated", "termination": bytes(data), "termination_ack": ack},
            "terms-terminated",
            "accepted",
        )
        if updated is None:
            raise Refused(409, "replay", "the agreement changed meanwhile")
        return ack

    # --- the vendor's default stream ---------------------------------------------------------

    def claimed(self, device_id: str) -> None:
        """The owner took this device: proffer the owner's terms to the vendor (in the background)."""
        config = self.agent.config
        if config.role != "owner" or not config.terms.vendor_api:
            return
        task = asyncio.get_running_loop().create_task(self._proffer_vendor(device_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _proffer_vendor(self, device_id: str) -> None:
        config = self.agent.config.terms
        agreement = self.roster.get(config.vendor_agreement)
        request = ProfferRequest(
            agreement.ref,
            config.vendor_api,
            recipient="vendor",
            devices=[device_id],
            metrics=["*"],
            purpose=agreement.purposes[0],
            retention_days=agreement.max_retention_days,
        )
        try:
            await self.proffer(request)
        except (UserError, Refused) as error:
            # no answer: the device keeps its factory default (the vendor) and the audit says so
            log.warning("terms for %s not agreed with the vendor: %s", device_id, error)
            await self.agent.audit(
                "terms-vendor-unanswered",
                {"device": device_id, "agreement": agreement.ref, "why": str(error)},
            )

    async def _vendor_answered(self, result: AgreementView, state: str) -> None:
        """The vendor did not accept: the owner's policy (terms.on_vendor_decline) decides what follows."""
        if state == "accepted" or result.get("followed_by"):
            return
        action = self.agent.config.terms.on_vendor_decline
        for device_id in result["devices"]:
            data: dict[str, object] = {
                "device": device_id,
                "agreement": result["agreement"],
                "answer": state,
                "action": action,
            }
            if action == "drop-vendor":
                home = dict(self.agent.home_destination(device_id), name="home")
                outcome = await self.agent.command(device_id, "set-destinations", {"destinations": [home]})
                data["device_outcome"] = outcome.outcome
            await self.agent.audit("terms-vendor-" + ("dropped" if action == "drop-vendor" else "kept"), data)

    def is_vendor_dropped(self, device_id: str) -> bool:
        """True when the vendor's latest answer for this device was not an accept and the owner's
        policy drops the vendor then: the device's destinations leave the vendor out."""
        if self.agent.config.terms.on_vendor_decline != "drop-vendor":
            return False
        latest = None
        for row in records.all_records(self.store, ""):
            if row.peer and signed.read_proffer(row.proffer).body.devices == (device_id,):
                latest = row
        return latest is not None and latest.state in ("declined", "refused", "alternative")

    # --- records ------------------------------------------------------------------------------

    async def list(self) -> builtins.list[AgreementView]:
        return [describe(row) for row in await asyncio.to_thread(records.all_records, self.store)]

    async def get(self, agreement_id: str) -> AgreementView:
        row = await asyncio.to_thread(records.get, self.store, agreement_id)
        if row is None:
            raise Refused(404, "unknown", f"no agreement {agreement_id}")
        return describe(row)

    async def record(self, agreement_id: str) -> bytes:
        row = await asyncio.to_thread(records.get, self.store, agreement_id)
        if row is None:
            raise Refused(404, "unknown", f"no agreement {agreement_id}")
        return records.record_bytes(row)

    # --- the outbox's gate --------------------------------------------------------------------

    def _windows(self, route_name: str, now_s: float) -> tuple[list[policy.InForce], bool]:
        """The agreements in force for a route, and whether one may still come.

        One may come while nothing was proffered yet (the owner has not chosen terms), while a
        proffer awaits its answer, or while an accepted one has not started.
        """
        rows = records.all_records(self.store, route_name)
        in_force: list[policy.InForce] = []
        is_awaited = not rows or any(row.state == "proffered" for row in rows)
        for row in rows:
            if row.state not in ("accepted", "terminated"):
                continue
            body = signed.read_proffer(row.proffer).body
            ended_s = None
            if row.termination is not None:
                ended_s = signed.read_stamp(row.termination, "termination").time_s
            window = policy.in_force(body, ended_s)
            if policy.is_ended(window, now_s):
                if row.state == "accepted":  # expiry ends it by itself, once, in the audit
                    records.update(self.store, row.id, {"state": "expired"}, "terms-expired", "accepted")
                continue
            is_awaited = is_awaited or now_s < window.from_s
            in_force.append(window)
        return in_force, is_awaited

    def _sort(
        self, route: Route, items: list[Forward], now_s: float
    ) -> tuple[list[Forward], list[int], list[int]]:
        windows, is_awaited = self._windows(route.name, now_s)
        send: list[Forward] = []
        hold: list[int] = []
        drop: list[int] = []
        for item in items:
            outbox_id, device_id = item.outbox_id, item.device_id
            reading = messages.parse_device_message(item.raw, "reading")
            names = [name for name, _, _ in reading.body]
            made_s = reading.time_s if reading.time_s is not None else now_s
            if any(policy.covers(w, device_id, names, made_s, now_s) for w in windows):
                send.append(item)
            elif is_awaited:
                hold.append(outbox_id)
            else:
                drop.append(outbox_id)
        return send, hold, drop

    async def gate(self, route: Route, items: list[Forward]) -> list[Forward]:
        """The forwards of a route that an agreement both parties signed carries now; the rest are
        held (an agreement may come) or withheld for good (the agreements ended, or never cover them)."""
        send, hold, drop = await asyncio.to_thread(self._sort, route, items, time.time())
        await asyncio.to_thread(records.hold, self.store, hold)
        await asyncio.to_thread(
            records.withhold, self.store, drop, route.name, "no agreement in force covers them"
        )
        return send
