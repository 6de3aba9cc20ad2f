"""The agent's configuration: one TOML file, validated once at start, every problem named.

The pydantic models below are the one definition of the file: its keys, types, choices, limits and
defaults. `from_dict` turns each problem pydantic finds into a line naming the file, the key, what was
expected and what was found; unknown keys are refused so a typo never silently falls back to a
default. See docs/configuration.md (tests/test_docs_reference.py checks it against these models).
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from host_agent.errors import UserError

__all__ = [
    "DEFAULT_CONFIG",
    "ApiConfig",
    "BrokerConfig",
    "Config",
    "StoreConfig",
    "TermsConfig",
    "from_dict",
    "load",
    "locate",
    "resolve",
]

DEFAULT_CONFIG = "firstparty.toml"

# TOML gives typed values, so nothing is coerced: "8480" is not a port and true is not 1.
# A path is the one exception: it is written as text and becomes a Path.
Count = Annotated[int, Field(ge=0)]
Port = Annotated[int, Field(ge=0, le=65535)]  # 0: a free one
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PathText = Annotated[Path, Field(strict=False)]
TextList = Annotated[tuple[str, ...], Field(strict=False)]  # a TOML array of strings, kept immutable


class _Table(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class BrokerConfig(_Table):
    host: str = "127.0.0.1"
    port: Port = 1883
    embedded: bool = True  # start and supervise our own mosquitto when true
    username: str | None = None
    password: str | None = None
    shared_group: str | None = None  # subscribe through $share/<group>/... (scale-out)
    client_id: str = "firstparty-agent"
    advertise_host: str | None = None  # how devices reach this broker (for set-destinations)
    # other brokers devices may still be on (the vendor's, before a device is rerouted): the agent
    # ingests from them too and sends commands through them ("host:port" each)
    relay_brokers: TextList = ()
    # the account the vendor gave this agent on those brokers (a vendor role: POST /relays)
    relay_username: str | None = None
    relay_password: str | None = None

    @field_validator("relay_brokers")
    @classmethod
    def _host_and_port(cls, relays: tuple[str, ...]) -> tuple[str, ...]:
        for index, relay in enumerate(relays):
            host, _, port = relay.rpartition(":")
            if not host or not port.isdigit():
                raise _Refused((index,), "must be 'host:port'", relay)
        return relays


class ApiConfig(_Table):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 8480
    # the largest request body taken; a larger one gets 413 before it is read (a card, a route or
    # a command is at most a few KiB)
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024


class StoreConfig(_Table):
    path: PathText = Path("firstparty.db")
    retention_days: Seconds = 365.0
    max_page_count: Count | None = None  # caps the database size (tests of a full disk)
    url: str | None = None  # postgresql://...: the PostgreSQL store instead of the SQLite file at `path`

    @field_validator("url")
    @classmethod
    def _postgresql(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
            raise _Refused((), "must be a PostgreSQL URL (postgresql://user@host:port/database)", url)
        return url


class TermsConfig(_Table):
    """First-party terms (docs/agreements.md): what this agent accepts, and what it proffers the vendor."""

    accepts: TextList | None = None
    alternative: str | None = None  # the one agreement offered instead of one not accepted
    # the vendor agent's API, or its broker when reached by a relay (mqtt://): a claimed device's terms go there
    vendor_api: str | None = None
    vendor_agreement: str = "service-only@1"
    on_vendor_decline: Literal["drop-vendor", "keep-vendor"] = "drop-vendor"


class Config(_Table):
    role: Literal["owner", "vendor"] = "owner"
    data_dir: PathText = Path(".")
    owner_key: PathText = Path("owner.key")
    files_dir: PathText = Path("files")  # file destinations of routes are written inside this folder only
    auto_accept: bool = False  # new devices go to the pending list unless true (vendor: always)
    broker: BrokerConfig = BrokerConfig()
    api: ApiConfig = ApiConfig()
    store: StoreConfig = StoreConfig()
    terms: TermsConfig = TermsConfig()
    outbox_backoff_max_s: Seconds = 30.0
    command_timeout_s: Seconds = 10.0
    log_rejections_per_minute: Count = 30
    receipts: bool = True  # sign receipts of committed readings for the devices (host_agent.ingest.receipts)

    def with_role(self, role: Literal["owner", "vendor"]) -> Config:
        """This configuration in another role (serve --role); a vendor accepts every device."""
        return self.model_copy(update={"role": role, "auto_accept": self.auto_accept or role == "vendor"})


class _Refused(ValueError):
    """A validator's refusal: where below the field (a list index), what was expected, what was found."""

    def __init__(self, where: tuple[int | str, ...], expected: str, found: object) -> None:
        super().__init__(expected)
        self.where, self.expected, self.found = where, expected, found


# pydantic's error type -> what the key had to be, in the words of docs/configuration.md
_EXPECTED = {
    "string_type": "text",
    "path_type": "text",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "tuple_type": "a list",
    "list_type": "a list",
}
_TABLE_TYPES = {"model_type", "model_attributes_type", "dict_type"}


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model of the table at `loc` (a path of table names from the top)."""
    model: type[BaseModel] = Config
    for key in loc:
        annotation = model.model_fields[str(key)].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel), loc
        model = annotation
    return model


def _choices(loc: tuple[int | str, ...]) -> list[str]:
    annotation = _model_at(loc[:-1]).model_fields[str(loc[-1])].annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # an optional choice: X | None
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return [str(choice) for choice in typing.get_args(annotation)]


def _dotted(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in loc).lstrip(".")


def _problem(source: str, error: ErrorDetails) -> str:
    """One problem as the user reads it: file, dotted key, what was expected, what was found."""
    loc, kind, found, context = error["loc"], error["type"], error["input"], error.get("ctx") or {}
    name = _dotted(loc)
    if kind == "extra_forbidden":
        known = ", ".join(sorted(_model_at(loc[:-1]).model_fields))
        return f"{source}: unknown key {name!r} (expected one of {known})"
    if kind in _TABLE_TYPES:
        return f"{source}: {name} must be a table [{name}], found {type(found).__name__}"
    if kind in _EXPECTED:
        return f"{source}: {name} must be {_EXPECTED[kind]}, found {type(found).__name__} {found!r}"
    if kind == "literal_error":
        return f"{source}: {name} must be one of {', '.join(_choices(loc))}, found {found!r}"
    if kind == "finite_number" or (kind == "greater_than_equal" and context.get("ge") == 0):
        return f"{source}: {name} must be a finite number, not negative, found {found!r}"
    if kind == "greater_than_equal":
        return f"{source}: {name} must be at least {context['ge']}, found {found!r}"
    if kind == "less_than_equal":
        return f"{source}: {name} must be at most {context['le']}, found {found!r}"
    refused = context.get("error")
    if isinstance(refused, _Refused):
        return f"{source}: {_dotted((*loc, *refused.where))} {refused.expected}, found {refused.found!r}"
    return f"{source}: {name}: {error['msg']}, found {found!r}"


def from_dict(data: dict[str, Any], source: str = "<config>", base: Path | None = None) -> Config:
    """Validate a configuration mapping and return a Config; raise UserError naming every problem.

    Relative paths are resolved: `data_dir` against `base` (the file's folder), `owner_key`,
    `files_dir` and `store.path` against `data_dir`.
    """
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise UserError("; ".join(_problem(source, problem) for problem in error.errors())) from None
    data_dir = ((base or Path(".")) / config.data_dir).resolve()
    return config.model_copy(
        update={
            "data_dir": data_dir,
            "owner_key": data_dir / config.owner_key,  # an absolute path stays as it is
            "files_dir": data_dir / config.files_dir,
            "store": config.store.model_copy(update={"path": data_dir / config.store.path}),
            "auto_accept": config.auto_accept or config.role == "vendor",
        }
    )


def locate(path: Path | None) -> Path | None:
    """The file to read: `path`, else $FIRSTPARTY_CONFIG, else ./firstparty.toml; None: the defaults."""
    if path is None and "FIRSTPARTY_CONFIG" in os.environ:
        path = Path(os.environ["FIRSTPARTY_CONFIG"])
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = Path(DEFAULT_CONFIG)
    return path


def resolve(path: Path | None) -> Config:
    """The configuration `locate` finds, or the defaults (data in ~/.firstparty)."""
    found = locate(path)
    if found is None:
        return from_dict({"data_dir": str(Path.home() / ".firstparty")})
    return load(found)


def load(path: Path) -> Config:
    """Read and validate a TOML file; raise UserError with the file and key of every problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}: pass --config FILE") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML: {error}") from None
    return from_dict(data, str(path), path.parent)
