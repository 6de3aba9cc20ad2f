"""The project's front door: the README's two commands, CI calling exactly the test one."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import REPO


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert first_block, "README must open with a ```sh block holding the two commands"
    assert readme.index("```sh") < 300, "the two commands must be on the README's first screen"
    lines = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    return [line for line in lines if line]


def test_readme_opens_with_exactly_two_commands_setup_then_test():
    assert _readme_commands() == ["bash scripts/setup", "bash scripts/test"]


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip()
        and not line.startswith("#")
        and not line.startswith("set ")
        and not line.startswith("cd ")
    ]
    assert ci_lines == [_readme_commands()[1]]


def test_setup_installs_then_runs_the_demo_and_test_installs_then_runs_pytest():
    setup = (REPO / "scripts" / "setup").read_text()
    test = (REPO / "scripts" / "test").read_text()
    assert "bash scripts/install" in setup and "firstparty demo" in setup
    assert "bash scripts/install" in test and "pytest" in test
    install = (REPO / "scripts" / "install").read_text()
    for package in ("mosquitto", "mosquitto-clients", "socat", "python3-venv"):
        assert package in install


def test_test_command_checks_style_and_types_first_and_its_fast_tier_is_the_unit_marker():
    test = (REPO / "scripts" / "test").read_text()
    assert test.index("bash scripts/check") < test.rindex("pytest")
    assert 'pytest -m unit "$@"' in test
    check = (REPO / "scripts" / "check").read_text()
    for step in ("ruff check", "ruff format --check", "pyright", "firmware/pyrightconfig.json"):
        assert step in check


def test_a_test_is_in_the_unit_tier_only_by_its_file_and_never_when_it_starts_a_broker():
    from tests.conftest import UNIT_FILES, _tier

    for known in UNIT_FILES:
        assert (REPO / known).exists(), f"{known} is listed as a unit tier file but does not exist"
    assert _tier("tests/protocol/test_cbor.py") == "unit"
    assert _tier("tests/firmware/test_settings.py", ["tmp_path", "mosquitto"]) == "integration"
    assert _tier("tests/agent/test_api.py") == "integration"
    assert _tier("tests/test_docs_reference.py") == "docs"
    assert _tier("tests/hil/test_sequence.py", ["mosquitto"]) == "hil"


def test_firstparty_command_answers_help_and_version():
    firstparty = REPO / ".venv" / "bin" / "firstparty"
    command = [str(firstparty)] if firstparty.exists() else [sys.executable, "-m", "host_agent.cli.main"]
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("firstparty ")
    bare = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "usage: firstparty" in bare.stdout
