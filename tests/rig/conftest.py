"""Fixtures of the rig: a virtual ESP32 on a pty, and mpremote to drive it as a user does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host_agent.virtual_board import VirtualBoard


def mpremote_command() -> str:
    beside = Path(sys.executable).with_name("mpremote")
    found = str(beside) if beside.exists() else shutil.which("mpremote")
    if not found:
        pytest.fail("mpremote is missing: run `bash scripts/install`")
    return found


@pytest.fixture
def virtual_board(tmp_path):
    """A virtual board with an empty flash folder, stopped after the test."""
    board = VirtualBoard(tmp_path / "flash").start()
    yield board
    board.stop()


@pytest.fixture
def mpremote(virtual_board):
    """Run `mpremote connect <pty> ARGS...` (bounded); return the completed process."""

    def run(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [mpremote_command(), "connect", virtual_board.port, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    return run
