"""The configuration model (host_agent/config.py): every problem of a file is refused with the file,
the dotted key, what was expected and what was found; paths resolve; a loaded config is frozen."""

from __future__ import annotations

import datetime
from pathlib import Path

import pydantic
import pytest

from host_agent import config as agent_config
from host_agent.errors import UserError


def _refusal(data: dict) -> str:
    with pytest.raises(UserError) as caught:
        agent_config.from_dict(data, "agent.toml", Path("/srv"))
    return str(caught.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"surprise": 1}, "agent.toml: unknown key 'surprise' (expected one of api, auto_accept, broker,"),
        ({"broker": {"hots": "x"}}, "agent.toml: unknown key 'broker.hots' (expected one of advertise_host,"),
        ({"api": 8480}, "agent.toml: api must be a table [api], found int"),
        ({"role": "boss"}, "agent.toml: role must be one of owner, vendor, found 'boss'"),
        (
            {"terms": {"on_vendor_decline": "shrug"}},
            "agent.toml: terms.on_vendor_decline must be one of drop-vendor, keep-vendor, found 'shrug'",
        ),
        ({"api": {"port": "8480"}}, "agent.toml: api.port must be an integer, found str '8480'"),
        ({"api": {"port": 8480.0}}, "agent.toml: api.port must be an integer, found float 8480.0"),
        ({"api": {"enabled": 1}}, "agent.toml: api.enabled must be true or false, found int 1"),
        ({"broker": {"port": True}}, "agent.toml: broker.port must be an integer, found bool True"),
        ({"receipts": "yes"}, "agent.toml: receipts must be true or false, found str 'yes'"),
        ({"command_timeout_s": "10"}, "agent.toml: command_timeout_s must be a number, found str '10'"),
        ({"command_timeout_s": True}, "agent.toml: command_timeout_s must be a number, found bool True"),
        ({"data_dir": 7}, "agent.toml: data_dir must be text, found int 7"),
        (
            {"broker": {"client_id": datetime.date(2026, 12, 5)}},
            "agent.toml: broker.client_id must be text, found date datetime.date(2026, 12, 5)",
        ),
        ({"terms": {"accepts": "service-only@1"}}, "agent.toml: terms.accepts must be a list, found str"),
        ({"terms": {"accepts": ["a@1", 2]}}, "agent.toml: terms.accepts[1] must be text, found int 2"),
        (
            {"outbox_backoff_max_s": float("nan")},
            "agent.toml: outbox_backoff_max_s must be a finite number, not negative, found nan",
        ),
        (
            {"store": {"retention_days": float("inf")}},
            "agent.toml: store.retention_days must be a finite number, not negative, found inf",
        ),
        (
            {"log_rejections_per_minute": -1},
            "agent.toml: log_rejections_per_minute must be a finite number, not negative, found -1",
        ),
        ({"broker": {"port": 65536}}, "agent.toml: broker.port must be at most 65535, found 65536"),
        ({"api": {"port": 2**70}}, f"agent.toml: api.port must be at most 65535, found {2**70}"),
        (
            {"api": {"max_body_bytes": 1023}},
            "agent.toml: api.max_body_bytes must be at least 1024, found 1023",
        ),
        (
            {"store": {"url": "mysql://db/x"}},
            "agent.toml: store.url must be a PostgreSQL URL (postgresql://user@host:port/database),"
            " found 'mysql://db/x'",
        ),
        (
            {"broker": {"relay_brokers": ["vendor:1883", "vendor"]}},
            "agent.toml: broker.relay_brokers[1] must be 'host:port', found 'vendor'",
        ),
        (
            {"broker": {"relay_brokers": ["vendor:mqtt"]}},
            "agent.toml: broker.relay_brokers[0] must be 'host:port', found 'vendor:mqtt'",
        ),
    ],
)
def test_each_kind_of_problem_names_the_file_key_expected_and_found(data, message):
    assert message in _refusal(data)


def test_every_problem_of_a_file_is_named_on_one_line():
    text = _refusal({"role": 3, "api": {"port": -1, "nope": {}}, "store": {"path": []}, "extra": 1})
    assert text.count("agent.toml: ") == 5 and "\n" not in text, text
    for key in ("role", "api.port", "'api.nope'", "store.path", "'extra'"):
        assert key in text


def test_a_nested_table_where_a_value_belongs_is_refused_not_taken():
    assert "broker.host must be text, found dict {'deep': {'er': 1}}" in _refusal(
        {"broker": {"host": {"deep": {"er": 1}}}}
    )


def test_relative_paths_resolve_against_the_files_folder_and_data_dir_absolute_ones_stay():
    config = agent_config.from_dict(
        {"data_dir": "agent", "owner_key": "/keys/owner.key", "store": {"path": "db/fp.db"}},
        "agent.toml",
        Path("/srv"),
    )
    assert config.data_dir == Path("/srv/agent")
    assert config.owner_key == Path("/keys/owner.key")
    assert config.files_dir == Path("/srv/agent/files")
    assert config.store.path == Path("/srv/agent/db/fp.db")


def test_the_vendor_role_accepts_every_device_whatever_the_file_says():
    assert agent_config.from_dict({"role": "vendor", "auto_accept": False}).auto_accept is True
    owner = agent_config.from_dict({})
    assert (owner.role, owner.auto_accept) == ("owner", False)
    vendor = owner.with_role("vendor")
    assert (vendor.role, vendor.auto_accept, owner.role) == ("vendor", True, "owner")


def test_a_loaded_configuration_cannot_be_changed_in_place():
    config = agent_config.from_dict({"broker": {"relay_brokers": ["vendor:1883"]}})
    with pytest.raises(pydantic.ValidationError):
        config.role = "vendor"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        config.api.port = 1  # type: ignore[misc]
    assert config.broker.relay_brokers == ("vendor:1883",)


def test_a_file_that_is_not_toml_or_not_there_is_named(tmp_path):
    with pytest.raises(UserError, match="not valid TOML"):
        (tmp_path / "bad.toml").write_text("role = \n")
        agent_config.load(tmp_path / "bad.toml")
    with pytest.raises(UserError, match="cannot read .*missing.toml.*pass --config FILE"):
        agent_config.load(tmp_path / "missing.toml")
