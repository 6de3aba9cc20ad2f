"""Fixtures of the rig: a virtual ESP32 on a pty, and mpremote to drive it as a user does."""

from __future__ import annotations

import subprocess

import pytest

from host_agent.rig.virtual_board import VirtualBoard
from tests.helpers import venv_tool


def mpremote_command() -> str:
    return venv_tool("mpremote")


@pytest.fixture
def virtual_board(tmp_path, request):
    """A virtual board, stopped after the test. Its flash is empty, or holds the files of an indirect
    parameter ({name: text}) from before the power-on."""
    flash = tmp_path / "flash"
    flash.mkdir()
    for name, text in getattr(request, "param", {}).items():
        (flash / name).write_text(text)
    board = VirtualBoard(flash).start()
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
