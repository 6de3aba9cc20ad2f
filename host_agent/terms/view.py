"""An agreement as the API, the console and the CLI show it: its record, the signed messages read.

`AgreementView` is a JSON document on the wire (GET /agreements...), so it is a TypedDict: the
API's responses are checked against it and the CLI reads the agent's answers as one.
"""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict  # pydantic reads a TypedDict of typing's only from Python 3.12

from host_agent.store.records import AgreementRecord
from host_agent.terms import signed

__all__ = ["AgreementView", "describe"]


class AgreementView(TypedDict):
    """An agreement, both sides alike: the terms its proffer states and what came of them."""

    id: str
    side: str  # first (this agent proffered it), second (this agent answered it), "-" (a file)
    state: str
    peer: str
    route: str
    agreement: str  # the roster ref, id@version
    owner_id: str
    recipient: str
    devices: list[str]
    metrics: list[str]
    purpose: str
    from_s: int
    until_s: int
    retention_days: int | None
    proffered_s: int
    answered_s: int | None
    decision: str | None
    alternative: str | None
    reason: str | None
    recipient_id: str | None
    terminated_s: int | None
    acknowledged_s: int | None
    followed_by: NotRequired[AgreementView]  # the owner took the counter-offer: its own proffer


def describe(record: AgreementRecord) -> AgreementView:
    """A record as the API and the CLI show it (the signed messages read, times in seconds)."""
    proffer = signed.read_proffer(record.proffer)
    body = proffer.body
    view = AgreementView(
        id=record.id,
        side=record.side,
        state=record.state,
        peer=record.peer,
        route=record.route,
        agreement=body.ref,
        owner_id=proffer.signer_id,
        recipient=body.recipient,
        devices=list(body.devices),
        metrics=list(body.metrics),
        purpose=body.purpose,
        from_s=body.from_s,
        until_s=body.until_s,
        retention_days=body.retention_days,
        proffered_s=proffer.time_s,
        answered_s=None,
        decision=None,
        alternative=None,
        reason=None,
        recipient_id=None,
        terminated_s=None,
        acknowledged_s=None,
    )
    if record.answer is not None:
        answer = signed.read_answer(record.answer)
        view["answered_s"] = answer.time_s
        view["decision"] = answer.body.decision
        view["alternative"] = answer.body.alternative_ref
        view["reason"] = answer.body.reason
        view["recipient_id"] = answer.signer_id
    if record.termination is not None:
        view["terminated_s"] = signed.read_stamp(record.termination, "termination").time_s
    if record.termination_ack is not None:
        view["acknowledged_s"] = signed.read_stamp(record.termination_ack, "termination-ack").time_s
    return view
