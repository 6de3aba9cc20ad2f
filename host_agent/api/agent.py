"""What the API asks of the agent it serves: a typed interface instead of reaching into its parts.

host_agent.service.Agent implements it; the API's routers receive it as `AgentDep`. The
offline application of the OpenAPI document has no agent behind it: nothing here is called
until a request comes in.
"""

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from host_agent.api.models import EnrolledOut, RegisteredOut, RelayOut, RelayRemovedOut, StatusOut
from host_agent.commands.control import CommandResult
from host_agent.owner import Owner
from host_agent.store.base import Store
from host_agent.terms.desk import TermsDesk
from host_agent.updates.desk import UpdateDesk

__all__ = ["AgentApi", "AgentDep", "ReceiptKey", "RouteChange", "agent_of"]


@dataclass(slots=True, frozen=True)
class RouteChange:
    """What adding, changing or removing a route did: its new grant, and what its devices said."""

    name: str
    grant_hex: str | None = None  # the grant signed for the new spec (None: the route was removed)
    needs_agreement: bool | None = None  # said when the route is added
    device_commands: list[CommandResult] | None = None  # None: no instead-of device was told anything

    def as_dict(self) -> dict[str, Any]:
        """The API's answer: only what the change has."""
        shown: dict[str, Any] = {"name": self.name}
        if self.grant_hex is not None:
            shown["grant_hex"] = self.grant_hex
        if self.needs_agreement is not None:
            shown["needs_agreement"] = self.needs_agreement
        if self.device_commands is not None:
            shown["device_commands"] = [c.as_dict() for c in self.device_commands]
        return shown


class ReceiptKey(Protocol):
    public: bytes


class AgentApi(Protocol):
    """The agent as the API sees it."""

    store: Store
    owner: Owner
    live: set[asyncio.Queue[Any]]
    updates: UpdateDesk
    terms: TermsDesk

    @property
    def receipts(self) -> ReceiptKey | None: ...

    def status(self) -> StatusOut: ...

    def rejection_counts(self) -> dict[str, int]: ...

    async def audit(self, kind: str, data: dict[str, Any]) -> None: ...

    async def register_card(self, data: bytes) -> RegisteredOut: ...

    async def enrol(self, card_data: bytes, password: str) -> EnrolledOut: ...

    async def enrol_from_device(self, device_url: str) -> EnrolledOut: ...

    async def add_relay(self, name: str, owner_id: str) -> RelayOut: ...

    async def remove_relay(self, name: str) -> RelayRemovedOut: ...

    async def command(
        self, device_id: str, op: str, args: dict[str, Any], timeout_s: float | None = None
    ) -> CommandResult: ...

    async def set_device_state(self, device_id: str, state: str) -> None: ...

    async def add_route(self, name: str, spec: dict[str, Any]) -> RouteChange: ...

    async def change_route(self, name: str, spec: dict[str, Any]) -> RouteChange: ...

    async def remove_route(self, name: str) -> RouteChange: ...


def agent_of(request: Request) -> AgentApi:
    """The agent behind the application (set by build_app)."""
    return request.app.state.agent


AgentDep = Annotated[AgentApi, Depends(agent_of)]
