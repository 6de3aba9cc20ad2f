"""The reference pages say what the code does: configuration keys, HTTP routes and their scopes,
the OpenAPI document, the systemd unit, and the README's list of docs."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
import typing
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from host_agent import config as agent_config
from host_agent.cli.main import build_parser
from host_agent.webapp import build_offline_app, openapi_text
from tests.helpers import REPO

DOCS = REPO / "docs"
TYPE_WORDS = {str: "string", Path: "string", int: "integer", bool: "boolean", float: "number"}


def _type_word(annotation) -> tuple[str, tuple[str, ...]]:
    """The documented type of a config field's annotation, and its choices (a Literal's values)."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # an optional key: X | None
        [annotation] = args
        return _type_word(annotation)
    if typing.get_origin(annotation) is typing.Annotated:  # a nested constraint
        return _type_word(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return "string", tuple(args)
    if typing.get_origin(annotation) is tuple:
        return "array of strings", ()
    return TYPE_WORDS[annotation], ()


def _blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


# --- docs/configuration.md ------------------------------------------------------------------


def _code_keys() -> dict[str, tuple[str, tuple[str, ...], object]]:
    """Every configuration key of the model: dotted name -> (type word, choices, default)."""
    keys = {}
    for key, field in agent_config.Config.model_fields.items():
        table = field.annotation
        if isinstance(table, type) and issubclass(table, BaseModel):
            for sub, sub_field in table.model_fields.items():
                keys[f"{key}.{sub}"] = (*_type_word(sub_field.annotation), sub_field.get_default())
        else:
            keys[key] = (*_type_word(field.annotation), field.get_default())
    return keys


def _documented_keys() -> dict[str, tuple[str, str, str]]:
    """The key tables of docs/configuration.md: dotted name -> (type, default, meaning)."""
    documented = {}
    text = (DOCS / "configuration.md").read_text()
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        heading = part.splitlines()[0]
        table = re.fullmatch(r"`\[(\w+)\]`", heading)
        if heading != "Top level" and not table:
            continue
        prefix = f"{table.group(1)}." if table else ""
        for key, kind, default, meaning in re.findall(
            r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \| (.+) \|$", part, re.M
        ):
            documented[prefix + key] = (kind.strip(), default.strip(), meaning)
    return documented


def test_every_configuration_key_is_documented_and_no_other():
    code, documented = set(_code_keys()), set(_documented_keys())
    assert not code - documented, f"undocumented keys: {sorted(code - documented)}"
    assert not documented - code, f"documented keys the code does not know: {sorted(documented - code)}"


def test_each_documented_type_default_and_choices_are_the_codes():
    problems = []
    for name, (kind, choices, default) in _code_keys().items():
        doc_kind, doc_default, meaning = _documented_keys()[name]
        if not doc_kind.startswith(kind):
            problems.append(f"{name}: type {doc_kind!r}, the code takes {kind}")
        if isinstance(default, Path):
            default = str(default)
        if isinstance(default, tuple):
            default = list(default)
        shown = None if doc_default == "unset" else tomllib.loads(f"x = {doc_default.strip('`')}")["x"]
        if shown != default or isinstance(shown, bool) != isinstance(default, bool):
            problems.append(f"{name}: default {doc_default}, the code's is {default!r}")
        problems += [f"{name}: choice {c!r} not named" for c in choices or () if f"`{c}`" not in meaning]
    assert not problems, "\n".join(problems)


def test_the_example_configurations_load_and_together_set_every_key():
    examples = [*_blocks(DOCS / "configuration.md", "toml"), *_blocks(DOCS / "operations.md", "toml")]
    assert len(examples) >= 2
    seen: set[str] = set()
    for index, text in enumerate(examples):
        path = Path(f"/tmp/example-{index}.toml")
        data = tomllib.loads(text)
        agent_config.from_dict(data, str(path), path.parent)  # the loader's checks, file untouched
        for key, value in data.items():
            seen.update(f"{key}.{sub}" for sub in value) if isinstance(value, dict) else seen.add(key)
    assert not set(_code_keys()) - seen, f"keys no example sets: {sorted(set(_code_keys()) - seen)}"


def test_the_error_shown_for_a_bad_file_is_the_one_the_cli_prints(tmp_path):
    [shown] = [
        line
        for b in _blocks(DOCS / "configuration.md", "text")
        for line in b.splitlines()
        if "error:" in line
    ]
    (tmp_path / "agent.toml").write_text('role = "boss"\n[api]\nport = "x"\nsurprise = 1\n')
    env = {k: v for k, v in os.environ.items() if k != "FIRSTPARTY_CONFIG"}
    run = subprocess.run(
        [str(Path(sys.executable).with_name("firstparty")), "devices", "list", "--config", "agent.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 2 and run.stderr.strip() == shown, run.stderr


# --- docs/openapi.json and docs/agent-api.md --------------------------------------------------


def _routes() -> dict[tuple[str, str], str]:
    """(method, path) -> the scope the code requires: 'no token', 'read' or 'admin'."""

    def names(dependant) -> set[str]:
        found = set()
        for dependency in dependant.dependencies:
            found.add(getattr(dependency.call, "__name__", ""))
            found |= names(dependency)
        return found

    routes = {}
    for route in build_offline_app().routes:
        if isinstance(route, APIRoute):
            needs = names(route.dependant)
            scope = "admin" if "admin" in needs else "read" if "principal" in needs else "no token"
            routes.update({(method, route.path): scope for method in route.methods})
    return routes


def test_docs_openapi_json_is_what_the_code_generates():
    assert (DOCS / "openapi.json").read_text() == openapi_text(), (
        "docs/openapi.json is stale: run `.venv/bin/firstparty api-spec --out docs/openapi.json`"
    )


def test_the_openapi_document_describes_every_route_of_the_app():
    spec = json.loads(openapi_text())
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert described == set(_routes())


def _api_headings() -> dict[tuple[str, str], str]:
    text = (DOCS / "agent-api.md").read_text()
    found = re.findall(r"^### `([A-Z]+) (/\S*)` \(([a-z ]+)\)$", text, re.M)
    return {(method, path): scope for method, path, scope in found}


def test_every_route_is_described_in_agent_api_md_with_the_scope_the_code_requires():
    code, documented = _routes(), _api_headings()
    assert not set(code) - set(documented), (
        f"routes not in agent-api.md: {sorted(set(code) - set(documented))}"
    )
    assert not set(documented) - set(code), (
        f"agent-api.md describes routes that do not exist: {sorted(set(documented) - set(code))}"
    )
    wrong = {route: (documented[route], scope) for route, scope in code.items() if documented[route] != scope}
    assert not wrong, f"(doc, code) scopes differ: {wrong}"


def _curl_requests() -> list[tuple[str, str, str]]:
    """(line, method, path) of every curl example in agent-api.md."""
    found = []
    for block in _blocks(DOCS / "agent-api.md", "text"):
        for line in block.splitlines():
            command = line.removeprefix("$ ").strip()
            if not command.startswith("curl "):
                continue
            words = shlex.split(command.replace('"$API', '"API'))
            url = next(w for w in words if w.startswith("API"))
            method = words[words.index("-X") + 1] if "-X" in words else "POST" if "-d" in words else "GET"
            found.append((line, method, url.removeprefix("API").split("?")[0]))
    return found


def test_every_curl_example_calls_a_route_that_exists():
    patterns = [(m, re.compile(re.sub(r"\{\w+\}", "[^/]+", p) + "$")) for m, p in _routes()]
    requests = _curl_requests()
    assert len(requests) >= 15
    wrong = [
        line for line, method, path in requests if not any(m == method and r.match(path) for m, r in patterns)
    ]
    assert not wrong, "curl examples of routes that do not exist:\n" + "\n".join(wrong)


def test_every_route_has_a_curl_example():
    examples = {(method, path) for _, method, path in _curl_requests()}
    missing = [
        f"{m} {p}"
        for m, p in _routes()
        if not any(em == m and re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", p), ep) for em, ep in examples)
    ]
    assert not missing, f"routes without a curl example in agent-api.md: {missing}"


# --- README.md -------------------------------------------------------------------------------


def test_the_readme_links_every_doc_and_every_link_it_has_exists():
    readme = (REPO / "README.md").read_text()
    links = set(re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme))
    local = {link for link in links if not re.match(r"[a-z]+:", link)}
    assert not [link for link in local if not (REPO / link).exists()], "README links to missing files"
    docs = {f"docs/{path.name}" for path in DOCS.iterdir() if path.suffix in (".md", ".json", ".service")}
    assert not docs - local, f"docs the README does not list: {sorted(docs - local)}"


def test_the_readme_names_every_verb_of_the_tour():
    readme = (REPO / "README.md").read_text()
    for shown in (
        "firstparty demo",
        "firstparty serve",
        "firstparty verify",
        "firstparty flash",
        "/readings",
    ):
        assert shown in readme, f"the README's tour lacks `{shown}`"


# --- docs/firstparty.service ------------------------------------------------------------------

UNIT = DOCS / "firstparty.service"


def _unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def _server_config() -> agent_config.Config:
    """The /etc/firstparty/firstparty.toml that docs/operations.md installs."""
    [text] = [t for t in _blocks(DOCS / "operations.md", "toml")]
    return agent_config.from_dict(
        tomllib.loads(text), "/etc/firstparty/firstparty.toml", Path("/etc/firstparty")
    )


def test_the_unit_runs_the_real_cli_with_options_its_parser_takes():
    [exec_start] = _unit()["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0].startswith("/") and argv[0].endswith("/.venv/bin/firstparty")
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert str(args.config) == "/etc/firstparty/firstparty.toml"
    assert "/etc/firstparty/firstparty.toml" in (DOCS / "operations.md").read_text()


def test_the_unit_runs_as_its_own_user_hardened_and_may_write_only_the_data_folder():
    unit = _unit()
    assert unit["User"] != ["root"] and unit["User"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("Restart", "on-failure")):
        assert unit.get(key) == [value], f"{key}={value}"
    data_dir = str(_server_config().data_dir)
    writable = " ".join(unit.get("ReadWritePaths", [])).split()
    assert data_dir in writable, f"the agent writes {data_dir}: ReadWritePaths={writable}"
    assert unit.get("WorkingDirectory") == [data_dir], (
        "file routes with relative paths land in the data folder"
    )


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    [exec_start] = _unit()["ExecStart"]
    program = shlex.split(exec_start)[0]
    unit = tmp_path / "firstparty.service"
    unit.write_text(text.replace(program, str(Path(sys.executable).with_name("firstparty"))))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    complaints = [line for line in result.stderr.splitlines() if "firstparty.service" in line]
    assert not complaints, "\n".join(complaints)


# --- docs/mqtt-conformance.md ------------------------------------------------------------------


def test_every_test_the_mqtt_conformance_table_names_exists():
    text = (DOCS / "mqtt-conformance.md").read_text()
    files = {
        "conf": REPO / "tests/firmware/test_mqtt_conformance.py",
        "client": REPO / "tests/firmware/test_mqtt_client.py",
    }
    named = re.findall(r"\b(conf|client)::(test_\w+)", text)
    assert len(named) > 40
    for short, name in named:
        assert f"def {name}(" in files[short].read_text(), (
            f"mqtt-conformance.md names {short}::{name}, which does not exist"
        )
    for path in re.findall(r"(tests/firmware/test_mqtt_\w+\.py)(?:::(test_\w+))?", text):
        assert (REPO / path[0]).exists(), path[0]
        if path[1]:
            assert f"def {path[1]}(" in (REPO / path[0]).read_text(), path


def test_every_content_type_in_the_protocol_is_the_codes():
    """Each COSE content type the protocol names (its list and the terms table) is the constant's value."""
    from fp import messages, release

    text = (DOCS / "protocol.md").read_text()
    flat = " ".join(text.split())
    constants = {
        "command": messages.CT_COMMAND,
        "ack": messages.CT_ACK,
        "card": messages.CT_CARD,
        "status": messages.CT_STATUS,
        "endorsement": messages.CT_ENDORSEMENT,
        "share grant": messages.CT_GRANT,
        "receipt": messages.CT_RECEIPT,
        "proffer": messages.CT_PROFFER,
        "answer": messages.CT_ANSWER,
        "termination": messages.CT_TERMINATION,
        "termination acknowledgement": messages.CT_TERMINATION_ACK,
        "release manifest": release.CT_RELEASE,
        "release approval": release.CT_APPROVAL,
    }
    for name, value in constants.items():
        assert f"`{value}` {name}" in flat, (name, value)
    table = {
        "proffer": messages.CT_PROFFER,
        "answer": messages.CT_ANSWER,
        "termination": messages.CT_TERMINATION,
        "termination-ack": messages.CT_TERMINATION_ACK,
    }
    for name, value in table.items():
        assert f"| {name} | {value} |" in text, (name, value)
    agreements = (DOCS / "agreements.md").read_text()
    for word, value in (("proffer", messages.CT_PROFFER), ("answer", messages.CT_ANSWER)):
        assert f"{word} ({value})" in agreements, (word, value)
