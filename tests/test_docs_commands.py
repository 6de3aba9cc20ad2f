"""Docs that cannot rot: every shell command shown in the README and docs is checked here.

Each line of a ```sh block is parsed by the real `firstparty` parser and, where that is cheap and
safe, run for real: the agent's verbs against a running agent (the docs world below: `firstparty
serve` on a temporary folder, a real mosquitto as the vendor, the real firmware as the device of
docs/protocol.md's examples), `serve` and `virtual-board` started and stopped, `api-spec` compared
with docs/openapi.json, `build` compiled. Every verb and every action of a verb must be documented,
and every option of a verb must be named in its section of docs/agent-cli.md.
"""

from __future__ import annotations

import argparse
import json
import os
import py_compile
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from host_agent.cli.main import SUBCOMMANDS, build_parser
from tests.helpers import REPO

DOCS = [REPO / "README.md", REPO / "boards" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FIRSTPARTY = Path(sys.executable).with_name("firstparty")
DOC_DEVICE_ID = "kzdvvj2umnduyauf35o36k6k"  # the device of docs/protocol.md: seed 000102...1f
DOC_DEVICE_SEED = bytes(range(32))
# verbs shown in the docs that the docs world runs for real, against the agent it started
WORLD_VERBS = ("devices", "routes", "command", "tokens", "audit", "status", "console-link")
# the home server's paths in docs/operations.md, played by the docs world's folder
SERVER_DATA_DIR = "/var/lib/firstparty/"


def shown_commands() -> list[tuple[str, str]]:
    """(file, command) for every line of every ```sh block."""
    found = []
    for path in DOCS:
        for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S):
            for line in block.splitlines():
                command = line.split(" #")[0].strip()
                if command:
                    found.append((str(path.relative_to(REPO)), command))
    return found


def _firstparty_argv(command: str, data: str = "/tmp/data/") -> list[str]:
    """The arguments of a shown `.venv/bin/firstparty ...` line; `DATA/` (the demo's folder) -> `data`."""
    words = shlex.split(command)
    assert words[0] == ".venv/bin/firstparty"
    return [w.replace("DATA/", data) for w in words[1:]]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


def _wait_for(predicate, timeout_s: float, what: str, process: subprocess.Popen | None = None, log=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.1)
    details = log.read_text() if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{details}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FIRSTPARTY_CONFIG", None)  # the shown --config, or ./firstparty.toml, decides
    return env


def _agent_config(relay_port: int | None) -> str:
    """The docs world's firstparty.toml: the layout of the demo's home agent (DATA/home/)."""
    relays = f'relay_brokers = ["127.0.0.1:{relay_port}"]\n' if relay_port else ""
    return (
        'data_dir = "."\n'
        "command_timeout_s = 20\n"
        "[broker]\n"
        "embedded = true\n"
        "port = 0\n" + relays + "[api]\nport = 0\n"
    )


class World:
    """A running agent, a vendor broker and one real-firmware device, for the shown commands."""

    def __init__(self, root: Path):
        from host_agent.bus.mosquitto import Mosquitto

        self.root = root
        self.home = root / "home"  # DATA/home, as the demo leaves it; the shown commands run here
        self.home.mkdir(parents=True)
        self.vendor = Mosquitto(root / "vendor").start()
        (self.home / "firstparty.toml").write_text(_agent_config(self.vendor.port))
        self.log = root / "serve.log"
        self.serve: subprocess.Popen | None = None
        self.device = None

    def start(self) -> World:
        from host_agent.owner import Owner
        from host_agent.rig.simdevice import SimDevice

        with open(self.log, "w") as log:
            self.serve = subprocess.Popen(
                [str(FIRSTPARTY), "serve", "--config", "firstparty.toml"],
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(),
            )
        _wait_for(
            lambda: "firstparty: owner agent" in self.log.read_text(), 30, "the agent", self.serve, self.log
        )
        info = json.loads((self.home / "agent.json").read_text())
        self.api = httpx.Client(
            base_url=info["api"], headers={"authorization": f"Bearer {info['token']}"}, timeout=30
        )
        flash = self.root / "flash"
        flash.mkdir()
        (flash / "key.seed").write_bytes(DOC_DEVICE_SEED)
        owner = Owner(self.home / "owner.key").public
        self.device = SimDevice(flash, (self.vendor.host, self.vendor.port), owner_key=owner).start()
        assert self.device.device_id(30) == DOC_DEVICE_ID
        _wait_for(
            lambda: self.api.get(f"/devices/{DOC_DEVICE_ID}").status_code == 200,
            30,
            "the device's card to reach the agent through the vendor's broker",
        )
        return self

    def stop(self) -> None:
        if self.device:
            self.device.stop()
        if self.serve and self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            try:
                self.serve.wait(20)
            except subprocess.TimeoutExpired:
                self.serve.kill()
                self.serve.wait()
        self.vendor.stop()

    def store(self):
        from host_agent.store.sqlite import SQLiteStore

        return SQLiteStore(self.home / "firstparty.db")

    def prepare(self, args: argparse.Namespace) -> None:
        """Put the world in the state a shown command expects, whatever the commands before it did."""
        from host_agent.api import tokens

        action = getattr(args, "action", None)
        if args.command == "tokens" and action in ("create", "revoke"):
            store = self.store()
            try:
                is_live = any(t.name == args.name and t.is_live for t in store.tokens())
                if action == "create" and is_live:
                    store.revoke_token(args.name)
                if action == "revoke" and not is_live:
                    tokens.issue(store, args.name, "read")
            finally:
                store.close()
        if args.command == "routes" and action in ("add", "remove"):
            active = [r["name"] for r in self.api.get("/routes").json() if r["is_active"]]
            if action == "add" and args.name in active:
                assert self.api.delete(f"/routes/{args.name}").status_code == 200
            if action == "remove" and args.name not in active:
                route = {"name": args.name, "destination": {"type": "file", "path": "spare.jsonl"}}
                assert self.api.post("/routes", json=route).status_code == 201

    def restore(self, args: argparse.Namespace) -> None:
        """Undo what would stop the next shown commands from working."""
        if args.command == "devices" and args.action == "reject":
            assert self.api.post(f"/pending/{args.device_id}/accept").status_code == 200

    def run(self, where: str, command: str) -> None:
        argv = _firstparty_argv(command, str(self.root) + "/")
        args = build_parser().parse_args(argv)
        self.prepare(args)
        run = subprocess.run(
            [str(FIRSTPARTY), *argv], cwd=self.home, capture_output=True, text=True, timeout=120, env=_env()
        )
        self.restore(args)
        output = run.stdout + run.stderr
        assert run.returncode == 0, f"{where}: `{command}` exited {run.returncode}:\n{output}"
        if args.command == "command":
            assert f"{args.op}: applied" in run.stdout, output
        if args.command == "routes" and args.action == "add" and args.instead_of_vendor:
            assert "set-destinations applied" in run.stdout, output
        if args.command == "console-link":  # the link signs in once
            link = run.stdout.strip()
            assert httpx.get(link).headers.get("set-cookie", "").startswith("fp_session="), output
            assert httpx.get(link).status_code == 401, f"{where}: the link signed in twice"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("docs-world"))
    try:
        yield world.start()
    finally:
        world.stop()


def _run_serve(where: str, command: str, root: Path) -> None:
    """Start a shown `serve` on a folder of its own, wait for its ready line, stop it with SIGTERM."""
    home = root / "home"
    home.mkdir()
    argv = _firstparty_argv(command, str(root) + "/")
    args = build_parser().parse_args(argv)
    config = home / (args.config or "firstparty.toml")  # an absolute --config stays as it is
    assert config.resolve().is_relative_to(root.resolve()), (
        f"{where}: show serve with a config in DATA/ or ./"
    )
    config.write_text(_agent_config(None))
    log = root / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(FIRSTPARTY), *argv], cwd=home, stdout=out, stderr=subprocess.STDOUT, env=_env()
        )
    try:
        role = args.role or "owner"
        _wait_for(lambda: f"firstparty: {role} agent" in log.read_text(), 30, "the ready line", process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
    assert code == 0, log.read_text()


def _run_virtual_board(where: str, command: str, folder: Path) -> None:
    """Start a shown `virtual-board`, check its first line is a pty that exists, stop it."""
    argv = _firstparty_argv(command)
    log = folder / "board.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(FIRSTPARTY), *argv], cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=_env()
        )
    try:
        first = _wait_for(
            lambda: log.read_text().splitlines()[:1] if "\n" in log.read_text() else None,
            30,
            "the pty line",
            process,
            log,
        )[0]
        assert first.startswith("/dev/pts/") and os.path.exists(first), log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
    assert code == 0, log.read_text()


def _run_api_spec(where: str, command: str, folder: Path) -> None:
    """Run a shown `api-spec` in a scratch folder: what it writes is docs/openapi.json, to the byte."""
    argv = _firstparty_argv(command)
    args = build_parser().parse_args(argv)
    if args.out is not None:
        (folder / args.out).parent.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [str(FIRSTPARTY), *argv], cwd=folder, capture_output=True, text=True, timeout=120, env=_env()
    )
    assert run.returncode == 0, run.stderr
    written = (folder / args.out).read_text() if args.out is not None else run.stdout
    assert written == (REPO / "docs" / "openapi.json").read_text(), (
        f"{where}: docs/openapi.json is stale: run `{command}`"
    )


def _run_backup(where: str, command: str, world: World) -> None:
    """Run a shown `sqlite3 ... .backup` on the live agent's database; the copy is whole and sound."""
    if shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 command is not installed (Debian package sqlite3)")
    words = [w.replace(SERVER_DATA_DIR, str(world.home) + "/") for w in shlex.split(command)]
    assert words[1].startswith(str(world.home)), f"{where}: back up the data folder's database"
    target = Path(words[2].split()[1])
    target.unlink(missing_ok=True)
    run = subprocess.run(words, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        devices = [row[0] for row in copy.execute("SELECT device_id FROM devices")]
        assert DOC_DEVICE_ID in devices
        assert copy.execute("SELECT COUNT(*) FROM audit").fetchone()[0] > 0
    finally:
        copy.close()
        target.unlink()


def _assert_options_spelled_out(where: str, argv: list[str]) -> None:
    """argparse takes `--confi` for `--config`; a doc must not, or a new option breaks it."""
    parser = _subparsers(build_parser())[argv[0]]
    parsers = [parser, *_subparsers(parser).values()]
    options = set().union(*(_options(p) for p in parsers)) | {"--help"}
    shortened = [w for w in argv if w.startswith("--") and w.split("=")[0] not in options]
    assert not shortened, f"{where}: {' '.join(shortened)} is not an option of `{argv[0]}` as spelled"


@pytest.mark.parametrize("where,command", shown_commands())
def test_shown_command_is_real(where, command, tmp_path, request):
    if command in (
        "bash scripts/setup",
        "bash scripts/test",
        "bash scripts/test --fast",
        "bash scripts/check",
    ):
        # the two README commands: checked by tests/test_project.py; setup's demo by tests/test_demo.py
        assert (REPO / command.split()[1]).exists()
    elif command.startswith(".venv/bin/firstparty "):
        argv = _firstparty_argv(command)
        args = build_parser().parse_args(argv)  # the options shown exist (argparse exits on any other)
        _assert_options_spelled_out(where, argv)
        if args.command == "build":
            run = subprocess.run(
                [str(FIRSTPARTY), *argv, "--out", str(tmp_path / "b")],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert run.returncode == 0, run.stderr
        elif args.command in ("demo", "verify"):
            pass  # demo, then verify on the files it leaves, run with these very options in tests/test_demo.py
        elif args.command in WORLD_VERBS:
            request.getfixturevalue("world").run(where, command)
        elif args.command == "serve":
            _run_serve(where, command, tmp_path)
        elif args.command == "virtual-board":
            _run_virtual_board(where, command, tmp_path)
        elif args.command == "api-spec":
            _run_api_spec(where, command, tmp_path)
        else:
            pytest.fail(f"{where}: no test runs `{command}`; show it in a ```text block if it needs a board")
    elif command.startswith("sqlite3 ") and ".backup " in command:
        _run_backup(where, command, request.getfixturevalue("world"))
    elif command.startswith(".venv/bin/python bench/"):
        script = REPO / shlex.split(command)[1]
        py_compile.compile(str(script), doraise=True)  # the benchmarks run for real when figures are recorded
    else:
        pytest.fail(f"{where}: `{command}` is shown but no test covers it")


def text_commands() -> list[tuple[str, str]]:
    """(file, command) for each `firstparty` command in a ```text block (output, or needs a board)."""
    found = []
    for path in DOCS:
        for block in re.findall(r"```text\n(.*?)```", path.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                commands = re.findall(r"\$\(([^)]*/?\.venv/bin/firstparty [^)]*)\)", line)
                line = line.removeprefix("$ ").removeprefix("sudo -u firstparty ").split(" #")[0].strip()
                if re.match(r"(/\S*/)?\.venv/bin/firstparty ", line):
                    commands.append(line)
                found += [(str(path.relative_to(REPO)), command) for command in commands]
    return found


@pytest.mark.parametrize("where,command", text_commands())
def test_commands_shown_as_text_parse_with_the_real_parser(where, command):
    words = shlex.split(command)
    assert words[0].endswith(".venv/bin/firstparty"), command
    argv = words[1:]
    build_parser().parse_args(argv)
    _assert_options_spelled_out(where, argv)


def test_every_verb_and_every_action_is_documented_in_the_readme_or_docs():
    text = "\n".join(path.read_text() for path in DOCS)
    verbs = _subparsers(build_parser())
    assert set(verbs) == set(SUBCOMMANDS)
    wanted = [f"firstparty {verb}" for verb in verbs]
    wanted += [
        f"firstparty {verb} {action}" for verb, parser in verbs.items() for action in _subparsers(parser)
    ]
    missing = [name for name in wanted if not re.search(re.escape(name) + r"(?![\w-])", text)]
    assert not missing, f"not documented: {', '.join(missing)}"


def _cli_sections() -> dict[str, str]:
    """docs/agent-cli.md's `## firstparty VERB` sections: verb -> text."""
    text = (REPO / "docs" / "agent-cli.md").read_text()
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    return {m.group(1): part for part in parts if (m := re.match(r"firstparty ([\w-]+)\n", part))}


def test_every_option_of_every_verb_is_named_in_its_section_and_none_that_is_not():
    sections = _cli_sections()
    verbs = _subparsers(build_parser())
    assert sorted(sections) == sorted(verbs), "docs/agent-cli.md needs one `## firstparty VERB` per verb"
    problems = []
    for verb, parser in verbs.items():
        parsers = [parser, *_subparsers(parser).values()]
        options = set().union(*(_options(p) for p in parsers))
        section = sections[verb]
        for option in sorted(options):
            if not re.search(re.escape(option) + r"(?![\w-])", section):
                problems.append(f"{verb}: option {option} is not documented")
        # positional choices (the operations of `command`) are named too
        for p in parsers:
            for action in p._actions:
                if (
                    not action.option_strings
                    and action.choices
                    and not isinstance(action, argparse._SubParsersAction)
                ):
                    problems += [
                        f"{verb}: {c} is not documented" for c in action.choices if f"`{c}`" not in section
                    ]
        # an option in the first column of a table must be one the verb has
        for row in re.findall(r"^\| ([^|\n]*(?:\\\|[^|\n]*)*)\|", section, re.M):
            problems += [
                f"{verb}: the doc names {o}, which it does not take"
                for o in re.findall(r"--[a-z][\w-]*", row)
                if o not in options
            ]
    assert not problems, "\n".join(problems)
