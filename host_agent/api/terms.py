"""The HTTP routes of first-party terms (docs/agent-api.md, "Agreements").

Public (no token), because any first party must reach any second party: the published policy
(`/.well-known/firstparty-terms`), the roster, and the two inboxes a second party answers on
(`/terms/proffers`, `/terms/terminations`). Each takes one signed message (COSE_Sign1 bytes, at
most 4096), checks it before anything is stored, and answers with its own signed message.
The owner's side (`/agreements...`) needs an admin token.
"""

from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic reads a TypedDict of typing's only from Python 3.12

from host_agent.api.agent import AgentApi
from host_agent.api.auth import Admin
from host_agent.terms import roster
from host_agent.terms.desk import COSE_TYPE, ProfferRequest, PublishedTerms, Refused
from host_agent.terms.view import AgreementView

MAX_MESSAGE_BYTES = 4096
_COSE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/cose": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_COSE_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/cose": {}}, "description": "the signed reply"}
}
_CBOR_RECORD: dict[int | str, dict[str, Any]] = {200: {"content": {"application/cbor": {}}}}
_HEX = "^([0-9a-f]{2})+$"


class RosterEntryOut(roster.AgreementEntry):
    """A roster entry with the digest a proffer binds (hex)."""

    digest_hex: str


class RosterOut(TypedDict):
    """The roster of standard agreements (GET /terms/roster)."""

    roster: str
    version: int
    agreements: list[RosterEntryOut]


class ProfferIn(BaseModel):
    """The owner's terms; what is left out comes from `route` (its devices, metrics and terms)."""

    agreement: str = Field(min_length=3, max_length=100, description="roster entry, id@version")
    to: str | None = Field(
        default=None,
        max_length=300,
        description="the recipient agent's API (https://...), or mqtt://HOST:PORT, one of the relay brokers; unset: offline",
    )
    route: str | None = Field(default=None, max_length=64)
    recipient: str | None = Field(default=None, max_length=200)
    devices: list[str] | None = Field(default=None, max_length=64)
    metrics: list[str] | None = Field(default=None, max_length=64)
    purpose: str | None = Field(default=None, max_length=200)
    from_s: int | None = Field(default=None, ge=0)
    until_s: int | None = Field(default=None, ge=0)
    retention_days: int | None = Field(default=None, ge=0)


class MessageIn(BaseModel):
    """A signed message the other party gave the owner out of band (a file), as hex."""

    message_hex: str = Field(pattern=_HEX, max_length=2 * MAX_MESSAGE_BYTES)


class TerminateIn(BaseModel):
    reason: str = Field(default="", max_length=200)


async def _message(request: Request) -> bytes:
    """The request body, refused as soon as it passes MAX_MESSAGE_BYTES."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_MESSAGE_BYTES:
            raise HTTPException(413, f"oversized: a terms message is at most {MAX_MESSAGE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _refused(error: Refused) -> HTTPException:
    return HTTPException(error.status, f"{error.reason}: {error.detail}")


def add_routes(app: FastAPI, agent: AgentApi) -> None:
    """Add the terms routes to the agent's application (the `/agreements...` ones want an admin token)."""

    @app.get("/.well-known/firstparty-terms")
    async def published_terms() -> PublishedTerms:
        """This agent's key and the roster agreements it accepts (and its one alternative)."""
        return agent.terms.published()

    @app.get("/terms/roster")
    async def terms_roster() -> RosterOut:
        """The roster of standard agreements this agent knows, with each entry's digest."""
        known = roster.load()
        return {
            "roster": known.name,
            "version": known.version,
            "agreements": [
                RosterEntryOut(**a.as_dict(), digest_hex=a.digest.hex()) for a in known.agreements
            ],
        }

    @app.post("/terms/proffers", openapi_extra=_COSE_BODY, responses=_COSE_ANSWER)
    async def receive_proffer(request: Request) -> Response:
        """Answer a proffer by this agent's policy: the signed answer (accept, alternative or decline)."""
        try:
            answer = await agent.terms.receive_proffer(await _message(request))
        except Refused as error:
            raise _refused(error) from None
        return Response(answer, media_type=COSE_TYPE)

    @app.post("/terms/terminations", openapi_extra=_COSE_BODY, responses=_COSE_ANSWER)
    async def receive_termination(request: Request) -> Response:
        """Record the owner's early end of an agreement this agent accepted: the signed acknowledgement."""
        try:
            ack = await agent.terms.receive_termination(await _message(request))
        except Refused as error:
            raise _refused(error) from None
        return Response(ack, media_type=COSE_TYPE)

    @app.get("/agreements")
    async def agreement_list(who: Admin) -> list[AgreementView]:
        """Every agreement this agent proffered (side first) or answered (side second)."""
        return await agent.terms.list()

    @app.post("/agreements", status_code=201)
    async def proffer(body: ProfferIn, who: Admin) -> AgreementView:
        """Sign and proffer the owner's terms; with `to`, the recipient's answer is in the reply."""
        request = ProfferRequest(**body.model_dump())
        try:
            return await agent.terms.proffer(request)
        except Refused as error:
            raise _refused(error) from None

    @app.get("/agreements/{agreement_id}")
    async def agreement(agreement_id: str, who: Admin) -> AgreementView:
        try:
            return await agent.terms.get(agreement_id)
        except Refused as error:
            raise _refused(error) from None

    @app.get("/agreements/{agreement_id}/record", responses=_CBOR_RECORD)
    async def agreement_record(agreement_id: str, who: Admin) -> Response:
        """The record both parties hold, byte for byte: the signed messages as one CBOR map."""
        try:
            return Response(await agent.terms.record(agreement_id), media_type="application/cbor")
        except Refused as error:
            raise _refused(error) from None

    @app.post("/agreements/{agreement_id}/answer")
    async def take_answer(agreement_id: str, body: Annotated[MessageIn, Body()], who: Admin) -> AgreementView:
        """The answer of a recipient that runs no agent (`firstparty terms accept|offer|decline`)."""
        try:
            return await agent.terms.take_answer(agreement_id, bytes.fromhex(body.message_hex))
        except Refused as error:
            raise _refused(error) from None

    @app.post("/agreements/{agreement_id}/terminate")
    async def terminate(agreement_id: str, body: TerminateIn, who: Admin) -> AgreementView:
        """End an accepted agreement now; the recipient's agent acknowledges it in the reply."""
        try:
            return await agent.terms.terminate(agreement_id, body.reason)
        except Refused as error:
            raise _refused(error) from None

    @app.post("/agreements/{agreement_id}/termination-ack")
    async def take_termination_ack(
        agreement_id: str, body: Annotated[MessageIn, Body()], who: Admin
    ) -> AgreementView:
        """The acknowledgement of a termination from a recipient that runs no agent."""
        try:
            return await agent.terms.take_termination_ack(agreement_id, bytes.fromhex(body.message_hex))
        except Refused as error:
            raise _refused(error) from None
