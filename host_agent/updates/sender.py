"""Send a release to a device over MQTT (fp.ota, docs/protocol.md section 13): what to send next.

The sender is a pure decision: given the update state the device last reported in its signed status,
`next_message` returns the next update message (an offer, the chunk at the offset the device names,
or the commit) or None once the device has installed the release or refused it. A window of one:
the device's status after each message says where it stands, so an interrupted transfer (the
sender stopped, or the device rebooted) continues from there when the same release is offered again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from fp import ota
from fp import release as fp_release
from fp.errors import ProtocolError
from host_agent.errors import UserError

CHUNK_BYTES = 2048
MANIFEST_FILE = "manifest.cose"
APPROVAL_FILE = "approval.cose"
DONE_STATES = (ota.ON_PROBATION, ota.CONFIRMED)
# The `update` map of a device's signed status (fp.ota.Session.state, and fp.ota.record's): decoded
# JSON from the device, so each value is checked where it is read.
UpdateMap = dict[str, object]


def as_map(value: object) -> dict[str, object] | None:
    """`value` if it is a map of decoded JSON (a device's status, its update map), else None."""
    # a boundary: decoded JSON, whose maps have string keys; the values stay `object`
    return cast(dict[str, object], value) if isinstance(value, dict) else None


@dataclass(frozen=True, slots=True)
class Release:
    """A signed release folder (`firstparty release build|sign`): manifest, approval, files."""

    manifest: bytes
    approval: bytes | None
    files: tuple[bytes, ...]
    version: tuple[int, int, int]

    @property
    def tag(self) -> str:
        """The id the device's status names the release by: SHA-256 of the manifest, 8 bytes, hex."""
        return hashlib.sha256(self.manifest).digest()[:8].hex()

    @property
    def total(self) -> int:
        return sum(len(data) for data in self.files)


def load_release(folder: Path) -> Release:
    """Read a release folder and check its files against its manifest; raise UserError."""
    try:
        manifest = (folder / MANIFEST_FILE).read_bytes()
    except OSError:
        raise UserError(f"{folder / MANIFEST_FILE} is missing: sign the release first") from None
    try:
        parsed = fp_release.parse_release(manifest)
    except ProtocolError as error:
        raise UserError(f"{folder / MANIFEST_FILE}: {error}") from None
    approval_path = folder / APPROVAL_FILE
    approval = approval_path.read_bytes() if approval_path.exists() else None
    files: list[bytes] = []
    for path, size, digest in parsed.files:
        try:
            data = (folder / "files" / path).read_bytes()
        except OSError:
            raise UserError(f"{folder / 'files' / path} is missing: build the release again") from None
        if len(data) != size or hashlib.sha256(data).digest() != digest:
            raise UserError(f"{folder / 'files' / path} does not match the signed manifest")
        files.append(data)
    return Release(manifest, approval, tuple(files), parsed.version)


def summary(update: object) -> str:
    """The update state in one word: idle, receiving N of M, installed-on-probation, confirmed,
    rolled-back, refused:REASON."""
    update = as_map(update)
    if update is None:
        return ota.IDLE
    state = update.get("state")
    if state == ota.RECEIVING:
        return f"receiving {update.get('received')} of {update.get('total')}"
    if state == ota.REFUSED:
        return f"refused:{update.get('reason')}"
    return str(state) if state in (ota.ON_PROBATION, ota.CONFIRMED, ota.ROLLED_BACK) else ota.IDLE


@dataclass
class Sender:
    """Decides the next update message for one release from the device's reported update state."""

    release: Release
    chunk_bytes: int = CHUNK_BYTES
    offered: bool = False
    outcome: str | None = None  # once finished: the summary of the device's final state
    sent_bytes: int = field(default=0)

    def next_message(self, update: UpdateMap | None) -> bytes | None:
        """The message to send given the device's latest `update` state, or None: finished."""
        state = (
            update.get("state") if update is not None and update.get("release") == self.release.tag else None
        )
        if state in DONE_STATES or (state == ota.REFUSED and self.offered):
            self.outcome = summary(update)
            return None
        if state != ota.RECEIVING or update is None:
            self.offered = True
            return ota.encode_offer(self.release.manifest, self.release.approval)
        index, offset = update.get("file"), update.get("offset")
        files = self.release.files
        if not isinstance(index, int) or not isinstance(offset, int) or not 0 <= index <= len(files):
            self.offered = True
            return ota.encode_offer(self.release.manifest, self.release.approval)
        if index == len(files):
            return ota.encode_commit()
        piece = files[index][offset : offset + self.chunk_bytes]
        self.sent_bytes += len(piece)
        return ota.encode_chunk(index, offset, piece)
