"""File destination: one JSON line per forward appended to a file inside `files_dir`, fsynced."""

from __future__ import annotations

import asyncio
import os
from binascii import b2a_base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from host_agent.outbox.forward import Forward

__all__ = ["FileSink"]


class FileSink:
    """Appends `{"idempotency_key", "device_id", "message"}` lines (the message in base64)."""

    is_kept = False

    def __init__(self, destination: dict[str, Any]):
        self.path = Path(destination["path"])

    async def deliver(self, forwards: Sequence[Forward]) -> None:
        # JSON written directly: device ids are base32 (fp.ids), keys are id:boot:seq, base64 has
        # no character JSON escapes (json.dumps cost more than the rest of a forward)
        lines = [
            f'{{"idempotency_key": "{forward.idempotency_key}", "device_id": "{forward.device_id}", '
            f'"message": "{b2a_base64(forward.raw, newline=False).decode()}"}}'
            for forward in forwards
        ]
        await asyncio.to_thread(_append_lines, self.path, lines)

    async def stop(self) -> None:
        """Nothing held: each batch opens and closes the file."""


def _append_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        file.write("".join(line + "\n" for line in lines))
        file.flush()
        os.fsync(file.fileno())
