"""Type checks (STYLE.md): host_agent/ with pyright against its real dependencies, and firmware/ as an
ESP32 sees it, against micropython-esp32-stubs (machine, network, esp32 and MicroPython's stdlib)."""

from __future__ import annotations

import subprocess

from tests.helpers import REPO, venv_tool


def _check(*args: str) -> None:
    result = subprocess.run(
        [venv_tool("pyright"), *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr


def test_host_agent_type_checks():
    _check()  # [tool.pyright] in pyproject.toml


def test_firmware_type_checks_against_the_esp32_stubs():
    stubs = REPO / "build" / "esp32-stubs"
    assert (stubs / "machine.pyi").exists(), "ESP32 stubs missing: run `bash scripts/install`"
    _check("-p", "firmware/pyrightconfig.json")
