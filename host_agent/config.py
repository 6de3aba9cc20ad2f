"""The agent's configuration: one TOML file, validated once at start, every problem named.

Each error names the file, the key, what was expected and what was found; unknown keys are refused
so a typo never silently falls back to a default. See docs/configuration.md.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_agent.errors import UserError

DEFAULT_CONFIG = "firstparty.toml"


@dataclass
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    embedded: bool = True  # start and supervise our own mosquitto when true
    username: str | None = None
    password: str | None = None
    shared_group: str | None = None  # subscribe through $share/<group>/... (scale-out)
    client_id: str = "firstparty-agent"
    advertise_host: str | None = None  # how devices reach this broker (for set-destinations)
    # other brokers devices may still be on (the vendor's, before a device is rerouted): the agent
    # ingests from them too and sends commands through them ("host:port" each)
    relay_brokers: list[str] = field(default_factory=list)
    # the account the vendor gave this agent on those brokers (a vendor role: POST /relays)
    relay_username: str | None = None
    relay_password: str | None = None


@dataclass
class ApiConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8480
    # the largest request body taken; a larger one gets 413 before it is read (a card, a route or
    # a command is at most a few KiB)
    max_body_bytes: int = 64 * 1024


@dataclass
class StoreConfig:
    path: Path = Path("firstparty.db")
    retention_days: float = 365.0
    max_page_count: int | None = None  # caps the database size (tests of a full disk)
    url: str | None = None  # postgresql://...: the PostgreSQL store instead of the SQLite file at `path`


@dataclass
class TermsConfig:
    """First-party terms (docs/agreements.md): what this agent accepts, and what it proffers the vendor."""

    accepts: list[str] | None = None  # roster refs (id@version); None: the role's default
    alternative: str | None = None  # the one agreement offered instead of one not accepted
    # the vendor agent's API, or its broker when reached by a relay (mqtt://): a claimed device's terms go there
    vendor_api: str | None = None
    vendor_agreement: str = "service-only@1"
    on_vendor_decline: str = "drop-vendor"  # or keep-vendor


@dataclass
class Config:
    role: str = "owner"  # owner or vendor
    data_dir: Path = Path(".")
    owner_key: Path = Path("owner.key")
    files_dir: Path = Path("files")  # file destinations of routes are written inside this folder only
    auto_accept: bool = False  # new devices go to the pending list unless true (vendor: always)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    terms: TermsConfig = field(default_factory=TermsConfig)
    outbox_backoff_max_s: float = 30.0
    command_timeout_s: float = 10.0
    log_rejections_per_minute: int = 30
    receipts: bool = True  # sign receipts of committed readings for the devices (host_agent.ingest.receipts)


_SCHEMA: dict[str, Any] = {
    "role": (str, ("owner", "vendor")),
    "data_dir": (str, None),
    "owner_key": (str, None),
    "files_dir": (str, None),
    "auto_accept": (bool, None),
    "outbox_backoff_max_s": ((int, float), None),
    "command_timeout_s": ((int, float), None),
    "log_rejections_per_minute": (int, None),
    "receipts": (bool, None),
    "broker": {
        "host": (str, None),
        "port": (int, None),
        "embedded": (bool, None),
        "username": (str, None),
        "password": (str, None),
        "shared_group": (str, None),
        "client_id": (str, None),
        "advertise_host": (str, None),
        "relay_brokers": (list, None),
        "relay_username": (str, None),
        "relay_password": (str, None),
    },
    "api": {"enabled": (bool, None), "host": (str, None), "port": (int, None), "max_body_bytes": (int, None)},
    "store": {
        "path": (str, None),
        "retention_days": ((int, float), None),
        "max_page_count": (int, None),
        "url": (str, None),
    },
    "terms": {
        "accepts": (list, None),
        "alternative": (str, None),
        "vendor_api": (str, None),
        "vendor_agreement": (str, None),
        "on_vendor_decline": (str, ("drop-vendor", "keep-vendor")),
    },
}

_TYPE_NAMES = {
    str: "text",
    int: "an integer",
    bool: "true or false",
    (int, float): "a number",
    list: "a list",
}


def _check(source: str, data: dict, schema: dict, prefix: str, problems: list[str]) -> None:
    for key, value in data.items():
        name = prefix + key
        if key not in schema:
            problems.append(f"{source}: unknown key {name!r} (expected one of {', '.join(sorted(schema))})")
            continue
        rule = schema[key]
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                problems.append(f"{source}: {name} must be a table [{name}], found {type(value).__name__}")
            else:
                _check(source, value, rule, name + ".", problems)
            continue
        kind, choices = rule
        is_bool = isinstance(value, bool)
        if (kind is not bool and is_bool) or not isinstance(value, kind):
            problems.append(
                f"{source}: {name} must be {_TYPE_NAMES[kind]}, found {type(value).__name__} {value!r}"
            )
        elif choices and value not in choices:
            problems.append(f"{source}: {name} must be one of {', '.join(choices)}, found {value!r}")
        elif kind in (int, (int, float)) and not is_bool and not (0 <= value < math.inf):
            problems.append(f"{source}: {name} must be a finite number, not negative, found {value!r}")


def from_dict(data: dict, source: str = "<config>", base: Path | None = None) -> Config:
    """Validate a configuration mapping and return a Config; raise UserError naming every problem."""
    problems: list[str] = []
    _check(source, data, _SCHEMA, "", problems)
    if problems:
        raise UserError("; ".join(problems))
    base = base or Path(".")
    config = Config()
    for key, value in data.items():
        if key in ("broker", "api", "store", "terms"):
            section = getattr(config, key)
            for sub_key, sub_value in value.items():
                setattr(section, sub_key, sub_value)
        else:
            setattr(config, key, value)
    config.data_dir = (base / Path(config.data_dir)).resolve()
    if not Path(config.owner_key).is_absolute():
        config.owner_key = config.data_dir / config.owner_key
    config.files_dir = config.data_dir / config.files_dir  # an absolute files_dir stays as it is
    if config.api.max_body_bytes < 1024:
        raise UserError(
            f"{source}: api.max_body_bytes must be at least 1024, found {config.api.max_body_bytes}"
        )
    if not Path(config.store.path).is_absolute():
        config.store.path = config.data_dir / config.store.path
    if config.store.url is not None and not config.store.url.startswith(("postgresql://", "postgres://")):
        raise UserError(
            f"{source}: store.url must be a PostgreSQL URL (postgresql://user@host:port/database),"
            f" found {config.store.url!r}"
        )
    for index, relay in enumerate(config.broker.relay_brokers):
        host, _, port = str(relay).rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"{source}: broker.relay_brokers[{index}] must be 'host:port', found {relay!r}")
    if config.role == "vendor":
        config.auto_accept = True
    return config


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
