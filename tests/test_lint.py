"""The style tools the project holds itself to (STYLE.md): ruff check and ruff format, everywhere."""

from __future__ import annotations

import subprocess

from tests.helpers import REPO, venv_tool


def test_ruff_check_passes():
    result = subprocess.run(
        [venv_tool("ruff"), "check", "."], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = subprocess.run(
        [venv_tool("ruff"), "format", "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
