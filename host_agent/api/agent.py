"""What the API asks of the agent it serves: a typed interface instead of reaching into its parts.

host_agent.service.Agent implements it; the API's routers receive it as `AgentDep`. The
offline application of the OpenAPI document has no agent behind it: nothing here is called
until a request comes in.
"""

import asyncio
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from host_agent.commands.control import CommandResult
from host_agent.owner import Owner
from host_agent.store.base import Store
from host_agent.updates.desk import UpdateDesk

__all__ = ["AgentApi", "AgentDep", "ReceiptKey", "agent_of"]


class ReceiptKey(Protocol):
    public: bytes


class AgentApi(Protocol):
    """The agent as the API sees it."""

    store: Store
    owner: Owner
    live: set[asyncio.Queue[Any]]
    updates: UpdateDesk

    @property
    def receipts(self) -> ReceiptKey | None: ...

    def status(self) -> dict[str, Any]: ...

    def rejection_counts(self) -> dict[str, int]: ...

    async def audit(self, kind: str, data: dict[str, Any]) -> None: ...

    async def register_card(self, data: bytes) -> dict[str, Any]: ...

    async def enrol(self, card_data: bytes, password: str) -> dict[str, Any]: ...

    async def enrol_from_device(self, device_url: str) -> dict[str, Any]: ...

    async def add_relay(self, name: str, owner_id: str) -> dict[str, Any]: ...

    async def remove_relay(self, name: str) -> dict[str, Any]: ...

    async def command(
        self, device_id: str, op: str, args: dict[str, Any], timeout_s: float | None = None
    ) -> CommandResult: ...

    async def set_device_state(self, device_id: str, state: str) -> None: ...

    async def add_route(self, name: str, spec: dict[str, Any]) -> dict[str, Any]: ...

    async def change_route(self, name: str, spec: dict[str, Any]) -> dict[str, Any]: ...

    async def remove_route(self, name: str) -> dict[str, Any]: ...


def agent_of(request: Request) -> AgentApi:
    """The agent behind the application (set by build_app)."""
    return request.app.state.agent


AgentDep = Annotated[AgentApi, Depends(agent_of)]
