"""The shapes of the API: request bodies, checked at the edge (422 naming the field), and the
responses whose shape is fixed."""

from typing import Annotated, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

# pydantic reads typing_extensions' TypedDict, not typing's, before Python 3.12
from typing_extensions import TypedDict

from fp import cbor, messages
from fp.errors import ProtocolError
from host_agent.routes import rules as routing
from host_agent.store.records import Device

__all__ = [
    "MAX_COMMAND_ARGS_BYTES",
    "ApprovalIn",
    "ApprovalKeptOut",
    "AuditOut",
    "CardIn",
    "CommandIn",
    "DeviceOut",
    "EnrolIn",
    "EnrolledOut",
    "GrantOut",
    "HealthOut",
    "OwnApprovalOut",
    "OwnerOut",
    "ReadingsPage",
    "RejectionsOut",
    "RegisteredOut",
    "RelayIn",
    "RelayOut",
    "RelayRemovedOut",
    "RouteIn",
    "RouteOut",
    "RouteSpec",
    "StateChangeOut",
    "StatusOut",
    "Terms",
    "UpdateIn",
]

MAX_COMMAND_ARGS_BYTES = 3072  # a command's arguments as CBOR; the signed command is at most 4096


# finite numbers from 0 up to a bound: an integer stays an integer
ExpiresS = (
    Annotated[int, Field(ge=0, le=routing.MAX_EXPIRES_S)]
    | Annotated[float, Field(ge=0, le=routing.MAX_EXPIRES_S, allow_inf_nan=False)]
    | None
)
RetentionDays = (
    Annotated[int, Field(ge=0, le=routing.MAX_RETENTION_DAYS)]
    | Annotated[float, Field(ge=0, le=routing.MAX_RETENTION_DAYS, allow_inf_nan=False)]
    | None
)


class Terms(BaseModel):
    """The terms a route's grant states (all optional)."""

    model_config = ConfigDict(extra="forbid")
    recipient: str | None = Field(default=None, max_length=routing.MAX_TEXT["recipient"])
    purpose: str | None = Field(default=None, max_length=routing.MAX_TEXT["purpose"])
    expires_s: ExpiresS = Field(default=None, description="Unix time the route ends")
    retention_days: RetentionDays = None


class RouteSpec(BaseModel):
    """A route's destination, scope, mode and terms (PUT /routes/{name} takes the name from the path).

    `destination` is checked by host_agent.routes.rules.validate (400 naming the key): mqtt and
    homeassistant `port` 1-65535, webhook `url` http or https, file `path` inside `files_dir`.
    """

    destination: dict[str, Any]
    devices: list[Annotated[str, Field(max_length=24)]] = Field(["*"], max_length=routing.MAX_LIST)
    metrics: list[Annotated[str, Field(max_length=routing.MAX_TEXT_DEFAULT)]] = Field(
        ["*"], max_length=routing.MAX_LIST
    )
    mode: str = Field("in-addition-to", max_length=32)
    terms: Terms = Terms()
    needs_agreement: bool | None = Field(
        default=None,
        description="deliver only what an agreement both parties signed carries; left out: true, "
        "except for a file route; false states that the destination is the owner's own",
    )

    def spec(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "devices": self.devices,
            "metrics": self.metrics,
            "mode": self.mode,
            "terms": self.terms.model_dump(exclude_none=True),
            **({} if self.needs_agreement is None else {"needs_agreement": self.needs_agreement}),
        }


class RouteIn(RouteSpec):
    name: str = Field(pattern=f"^{routing.NAME.pattern}$", max_length=64)


class DeviceOut(BaseModel):
    """A device as GET /devices shows it: the registry's record and its update state in one word."""

    device_id: str
    owner_id: str | None
    name: str | None
    board: str | None
    firmware: str | None
    state: str = Field(description="pending, accepted or rejected")
    first_seen: float
    last_seen: float | None
    status: dict[str, Any] | None = Field(description="its last signed status, as the device sent it")
    update: str = Field(description="idle, receiving N of M, installed-on-probation, confirmed, ...")

    @classmethod
    def of(cls, device: Device, update: str) -> "DeviceOut":
        return cls(**device.as_dict(), update=update)


class RegisteredOut(BaseModel):
    """A device registered from its card (POST /devices): accepted at once."""

    device_id: str
    state: str
    board: str


class EnrolledOut(BaseModel):
    """A device's password now let in by the embedded broker, and where the device reaches it."""

    device_id: str
    broker: str = Field(description="host:port of the devices' listener")


class RelayOut(BaseModel):
    """A relay account on the devices' listener; its password is shown this once."""

    username: str
    password: str
    owner_id: str


class RelayRemovedOut(BaseModel):
    username: str
    removed: bool


class CardIn(BaseModel):
    card_hex: str = Field(pattern="^([0-9a-f]{2})+$", max_length=4096)


class EnrolIn(BaseModel):
    """A device's password for this agent's broker: with its card (`firstparty flash` sends both),
    or fetched by the agent from the device's LAN API (`device_url`) while its claim window is open."""

    card_hex: str | None = Field(None, pattern="^([0-9a-f]{2})+$", max_length=4096)
    password: str | None = Field(None, pattern="^[0-9a-f]{32}$")
    device_url: str | None = Field(
        None, pattern=r"^http://[A-Za-z0-9.:\[\]-]+(:[0-9]{1,5})?/?$", max_length=300
    )

    @field_validator("device_url")
    @classmethod
    def _a_url_with_a_port_that_exists(cls, url: str | None) -> str | None:
        if url is not None:
            try:
                port = httpx.URL(url).port  # the pattern lets any "host:port" through
            except (httpx.InvalidURL, ValueError) as error:
                raise ValueError(f"not a device URL: {error}") from None
            if port is not None and not 1 <= port <= 65535:
                raise ValueError(f"not a device URL: port {port} is not 1-65535")
        return url


class RelayIn(BaseModel):
    """A relay account for an owner's agent: it reads the readings of that owner's devices only."""

    name: str = Field(pattern="^[a-z0-9][a-z0-9_-]{0,47}$")
    owner_id: str = Field(pattern="^[a-z2-7]{24}$")


class CommandIn(BaseModel):
    """A command; hand-over takes the new owner's key as `{"owner_hex": 64 hex digits}`."""

    op: str = Field(max_length=32)
    args: dict[str, Any] = Field(
        {},
        description=f"at most {messages.MAX_DEPTH - 2} levels deep, {MAX_COMMAND_ARGS_BYTES} bytes as CBOR",
    )
    timeout_s: float | None = Field(default=None, gt=0, le=120, allow_inf_nan=False)

    @field_validator("args")
    @classmethod
    def _fits_a_command(cls, args: dict[str, Any]) -> dict[str, Any]:
        # the signed command nests args two levels down; what CBOR cannot carry is refused here
        try:
            size = len(cbor.encode({"args": {"args": args}}))
        except ProtocolError as error:
            raise ValueError(f"args cannot be sent: {error.detail}") from None
        if size > MAX_COMMAND_ARGS_BYTES:
            raise ValueError(f"args take {size} bytes as CBOR, more than {MAX_COMMAND_ARGS_BYTES}")
        return args


class UpdateIn(BaseModel):
    """A release to send to a device, by its tag (GET /releases)."""

    release: str = Field(pattern="^[0-9a-f]{16}$", description="a release's tag, from GET /releases")


class ApprovalIn(BaseModel):
    """An owner's approval of a release, made by that owner's agent (POST /releases/{tag}/approve)."""

    approval_hex: str = Field(
        pattern="^([0-9a-f]{2})+$", max_length=1024, description="an owner's approval (content type 65211)"
    )


# --- responses ---------------------------------------------------------------------------------


class HealthOut(BaseModel):
    """Whether the agent is ok: the store commits and the broker is connected."""

    ok: bool
    store: str
    broker: str
    role: str


class OwnApprovalOut(BaseModel):
    """The agent's owner's approval of a release (POST /releases/{tag}/approve): hand it to the vendor."""

    release: str
    owner_id: str
    approval_hex: str


class ApprovalKeptOut(BaseModel):
    """An owner's approval the agent now holds (POST /releases/{tag}/approvals)."""

    release: str
    owner_id: str


class StatusOut(TypedDict):
    """The agent's state (GET /status, /healthz, /metrics): host_agent.service.Agent.status()."""

    role: str
    owner_id: str
    store: str  # ok, disk-full or cannot-commit
    broker: str  # connected or disconnected
    broker_restarts: int
    # where devices log in to the embedded broker: the key of their password for it (None: not embedded)
    broker_endpoint: str | None
    accepted: dict[str, int]  # messages accepted since start, by kind
    rejected: dict[str, int]  # the non-zero rejections since start, by reason
    outbox_delivered: int
    outbox_failed_attempts: int
    uptime_s: float


class StateChangeOut(BaseModel):
    device_id: str
    state: str


class ReadingsPage(BaseModel):
    """A page of readings; `next_after_id` continues it (None: nothing follows)."""

    items: list[dict[str, Any]]
    next_after_id: int | None


class RouteOut(BaseModel):
    """A route as GET /routes shows it: a password only as `has_password` (routing.without_secrets)."""

    id: int
    name: str
    destination: dict[str, Any]
    devices: list[str]
    metrics: list[str]
    mode: str
    terms: dict[str, Any]
    needs_agreement: bool
    created: float
    is_active: bool
    grant_hex: str | None

    @classmethod
    def of(cls, route: routing.Route) -> "RouteOut":
        return cls(
            **routing.without_secrets(route.spec()),
            id=route.id,
            name=route.name,
            created=route.created,
            is_active=route.is_active,
            grant_hex=route.grant_hex,
        )


class GrantOut(BaseModel):
    route: str
    terms: dict[str, Any]
    grant_hex: str | None
    is_active: bool


class OwnerOut(BaseModel):
    owner_id: str
    public_key_hex: str
    receipt_key_hex: str | None  # the key devices trust for this agent's receipts


class RejectionsOut(BaseModel):
    """Rejections since start by reason (the non-zero ones), and the latest recorded."""

    counts: dict[str, int]
    recent: list[dict[str, Any]]


class AuditOut(BaseModel):
    """The audit log's entries, and whether its hash chain is intact (else the first bad entry)."""

    is_intact: bool
    first_bad: tuple[int, str] | None
    entries: list[dict[str, Any]]
