"""The owner's Ed25519 key (a 0600 file created on first use) and the commands it signs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from fp import ids, messages
from host_agent.errors import UserError


def load_or_create_seed(key_path: Path) -> bytes:
    """Return the Ed25519 seed in `key_path`, created (mode 0600) on first use; refuse a readable one."""
    if key_path.exists():
        mode = key_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise UserError(f"{key_path} is readable by others (mode {mode:o}): chmod 600 it")
        seed = key_path.read_bytes()
        if len(seed) != 32:
            raise UserError(f"{key_path} is not a 32-byte Ed25519 seed")
        return seed
    key_path.parent.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(32)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
    return seed


class Owner:
    """The owner of devices: signs commands with a counter that only ever grows."""

    def __init__(self, key_path: Path):
        self.key_path = Path(key_path)
        self.counter_path = self.key_path.with_suffix(".counter")
        self._key = SigningKey(self._load_or_create_seed())
        self.public = bytes(self._key.verify_key)
        self.owner_id = ids.id_from_public_key(self.public)

    def _load_or_create_seed(self) -> bytes:
        return load_or_create_seed(self.key_path)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data)).signature

    def _next_counter(self) -> int:
        # Milliseconds since 1970, or one more than the last: it grows even if the counter file is lost.
        last = json.loads(self.counter_path.read_text()) if self.counter_path.exists() else 0
        counter = max(last + 1, int(time.time() * 1000))
        tmp = self.counter_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(counter))
        os.replace(tmp, self.counter_path)
        return counter

    def command(self, device_id: str, op: str, args: dict[str, Any], ttl_s: int = 300) -> bytes:
        """Return a signed command for `device_id`, valid for `ttl_s` seconds."""
        now = int(time.time())
        return messages.encode_command(
            self.sign, self.public, device_id, self._next_counter(), now, now + ttl_s, op, args
        )
