"""Docs that cannot rot: every shell command shown in the README and docs is checked here."""

from __future__ import annotations

import py_compile
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from host_agent.cli import SUBCOMMANDS, build_parser
from tests.helpers import REPO

DOCS = [REPO / "README.md", REPO / "boards" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


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


def _firstparty_argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == ".venv/bin/firstparty"
    return [w.replace("DATA/", "/tmp/data/") for w in words[1:]]


@pytest.mark.parametrize("where,command", shown_commands())
def test_shown_command_is_real(where, command, tmp_path):
    if command in ("bash scripts/setup", "bash scripts/test"):
        # the two README commands: checked by tests/test_project.py; setup's demo by tests/test_demo.py
        assert (REPO / command.split()[1]).exists()
    elif command.startswith(".venv/bin/firstparty "):
        argv = _firstparty_argv(command)
        build_parser().parse_args(argv)  # the options shown exist (argparse exits on any other)
        if argv[0] == "build":
            firstparty = Path(sys.executable).with_name("firstparty")
            run = subprocess.run(
                [str(firstparty), *argv, "--out", str(tmp_path / "b")],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert run.returncode == 0, run.stderr
        else:
            # demo and verify, with these very options, run in tests/test_demo.py
            assert argv[0] in ("demo", "verify"), f"{where}: no test runs `{command}`"
    elif command.startswith(".venv/bin/python bench/"):
        script = REPO / shlex.split(command)[1]
        py_compile.compile(str(script), doraise=True)  # the benchmarks run for real when figures are recorded
    else:
        pytest.fail(f"{where}: `{command}` is shown but no test covers it")


def test_every_subcommand_is_documented_in_the_readme_or_docs():
    text = "\n".join(path.read_text() for path in DOCS)
    for name in SUBCOMMANDS:
        assert f"firstparty {name}" in text, f"`firstparty {name}` is not documented"
