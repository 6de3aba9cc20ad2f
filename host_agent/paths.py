"""Where the agent finds the firmware sources it builds, flashes and runs in the virtual board."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
BOARDS = REPO / "boards"


def firmware_dir() -> Path:
    """Return the firmware source folder, or raise with what to do when it is not there."""
    if not (FIRMWARE / "fp").is_dir():
        raise FileNotFoundError(
            f"firmware sources not found at {FIRMWARE}: install Firstparty from a git checkout (pip install -e .)"
        )
    return FIRMWARE


def tool_beside(name: str) -> str | None:
    """The command `name` installed beside this Python (in .venv by scripts/install), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)
