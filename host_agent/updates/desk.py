"""The agent's releases and their transfers to devices (docs/agent-api.md, "Updates").

A release the agent offers lives in DATA_DIR/releases/<tag>/ (`import_release`: manifest.cose,
files/, and approvals/<owner id>.cose, one per owner who approved it). In the vendor role these are
the vendor's releases, offered to its devices (an unclaimed device installs them as they are) and
to their owners, whose approvals (POST /releases/{tag}/approvals) go with the transfer to their
devices; in the owner role the agent's owner approves one (POST /releases/{tag}/approve) or signs
their own. A transfer runs host_agent.updates.sender.Sender in a task: publish one update message, wait
for the device's next status (ingest hands it over once it is verified and stored), repeat.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fp import cose, topics
from fp import release as fp_release
from fp.errors import ProtocolError
from fp.ids import is_valid_id
from host_agent.errors import UserError
from host_agent.owner import Owner
from host_agent.store.records import Device
from host_agent.updates.sender import (
    MANIFEST_FILE,
    Release,
    Sender,
    UpdateMap,
    as_map,
    load_release,
    summary,
)

RELEASES_DIR = "releases"
APPROVALS_DIR = "approvals"
ANSWER_TIMEOUT_S = 5.0  # no status after a message: send what the last one asked for again
MAX_SILENT = 12  # answers missed in a row before the transfer gives up (a device away for a minute)
_TAG = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    """A release on offer, as GET /releases shows it."""

    release: str  # its tag: SHA-256 of the manifest, 8 bytes, hex
    version: str  # "major.minor.patch"
    arch: str
    counter: int
    min_from: str
    signer_id: str
    files: int
    total_bytes: int
    approved_by: list[str]  # the owner ids whose approvals the agent holds


@dataclass(frozen=True, slots=True)
class TransferInfo:
    """The agent's transfer of a release to a device, as GET /devices/{id}/update shows it."""

    release: str
    running: bool
    sent_bytes: int
    total_bytes: int
    outcome: str | None  # the device's verdict, or "timeout: ..." / "stopped: ..."; None while running


@dataclass(frozen=True, slots=True)
class Progress:
    """A device's update state and the agent's transfer to it (GET /devices/{id}/update)."""

    device_id: str
    state: str  # the update state in one word (host_agent.updates.sender.summary)
    update: UpdateMap | None  # the update map of its last status, as the device sent it
    transfer: TransferInfo | None


def import_release(data_dir: Path, folder: Path) -> Release:
    """Check a signed release folder and copy it where the agent offers it (the CLI, on the agent's host)."""
    loaded = load_release(folder)
    target = data_dir / RELEASES_DIR / loaded.tag
    parsed = fp_release.parse_release(loaded.manifest)
    if not (target / MANIFEST_FILE).exists():
        staging = target.with_name(loaded.tag + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "files").mkdir(parents=True)
        (staging / APPROVALS_DIR).mkdir()
        for (path, _, _), data in zip(parsed.files, loaded.files, strict=True):
            (staging / "files" / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / "files" / path).write_bytes(data)
        (staging / MANIFEST_FILE).write_bytes(loaded.manifest)
        staging.rename(target)
    if loaded.approval is not None:
        owner_id = _approval_owner(loaded.approval, loaded.manifest)
        (target / APPROVALS_DIR / f"{owner_id}.cose").write_bytes(loaded.approval)
    return loaded


def _approval_owner(approval: bytes, manifest: bytes) -> str:
    """The owner id an approval of `manifest` names; raise UserError for anything else (the device
    checks its signature against its owner's key)."""
    try:
        message = cose.parse_sign1(approval, 512)
    except ProtocolError as error:
        raise UserError(f"not an approval: {error}") from None
    owner_id = message.claims.get(fp_release.CLAIM_ISS)
    if message.content_type != fp_release.CT_APPROVAL or not isinstance(owner_id, str):
        raise UserError("not an approval (content type 65211, naming its owner)")
    if message.payload != hashlib.sha256(manifest).digest():
        raise UserError("this approval is of another release")
    if not is_valid_id(owner_id):
        raise UserError("the approval names no owner id")
    return owner_id


@dataclass
class Transfer:
    """One release on its way to one device."""

    device_id: str
    sender: Sender
    task: asyncio.Task[None] | None = None
    outcome: str | None = None  # the device's verdict, or "timeout: ..."

    def info(self) -> TransferInfo:
        return TransferInfo(
            release=self.sender.release.tag,
            running=self.outcome is None,
            sent_bytes=self.sender.sent_bytes,
            total_bytes=self.sender.release.total,
            outcome=self.outcome,
        )


class UpdateDesk:
    """Releases on offer and transfers in progress, for one agent."""

    def __init__(
        self,
        data_dir: Path,
        owner: Owner,
        publish: Callable[[str, bytes], None],
        audit: Callable[[str, dict[str, Any]], Awaitable[None]],
    ):
        self.root = data_dir / RELEASES_DIR
        self.owner = owner  # approves in the owner's name
        self.publish = publish  # (topic, payload)
        self.audit = audit  # (kind, data): an entry of the audit log
        self.transfers: dict[str, Transfer] = {}
        self.latest: dict[str, UpdateMap | None] = {}  # device id -> its last reported update state
        self.answered: dict[str, asyncio.Event] = {}

    # --- releases ---------------------------------------------------------------------------

    def _folder(self, tag: str) -> Path:
        folder = self.root / tag
        if not _TAG.fullmatch(tag) or not (folder / MANIFEST_FILE).exists():
            raise LookupError(f"no release {tag}: import it with `firstparty update --release DIR`")
        return folder

    def describe(self, tag: str) -> ReleaseInfo:
        folder = self._folder(tag)
        parsed = fp_release.parse_release((folder / MANIFEST_FILE).read_bytes())
        approvals = sorted(p.stem for p in (folder / APPROVALS_DIR).glob("*.cose"))
        return ReleaseInfo(
            release=tag,
            version=".".join(str(part) for part in parsed.version),
            arch=parsed.arch,
            counter=parsed.counter,
            min_from=".".join(str(part) for part in parsed.min_from),
            signer_id=parsed.signer_id,
            files=len(parsed.files),
            total_bytes=sum(size for _, size, _ in parsed.files),
            approved_by=approvals,
        )

    def releases(self) -> list[ReleaseInfo]:
        if not self.root.exists():
            return []
        return [self.describe(p.name) for p in sorted(self.root.iterdir()) if (p / MANIFEST_FILE).exists()]

    def approve(self, tag: str) -> bytes:
        """The agent's owner approves this release: the approval that goes with its transfers."""
        folder = self._folder(tag)
        manifest = (folder / MANIFEST_FILE).read_bytes()
        approval = fp_release.encode_approval(self.owner.sign, self.owner.public, manifest)
        (folder / APPROVALS_DIR / f"{self.owner.owner_id}.cose").write_bytes(approval)
        return approval

    def approval_owner(self, tag: str, approval: bytes) -> str:
        """The owner id an approval of release `tag` names; raise UserError if it approves no such thing."""
        return _approval_owner(approval, (self._folder(tag) / MANIFEST_FILE).read_bytes())

    def add_approval(self, tag: str, approval: bytes) -> str:
        """Keep an owner's approval (the vendor role: an owner approves the vendor's release)."""
        owner_id = self.approval_owner(tag, approval)
        (self._folder(tag) / APPROVALS_DIR / f"{owner_id}.cose").write_bytes(approval)
        return owner_id

    def _release_for(self, tag: str, owner_id: str | None) -> Release:
        folder = self._folder(tag)
        loaded = load_release(folder)
        approval = folder / APPROVALS_DIR / f"{owner_id}.cose"
        is_approved = owner_id is not None and approval.exists()
        return Release(
            loaded.manifest, approval.read_bytes() if is_approved else None, loaded.files, loaded.version
        )

    # --- transfers --------------------------------------------------------------------------

    def on_status(self, device_id: str, body: object) -> None:
        """A verified, stored status of a device (host_agent.service.Agent._after_commit)."""
        status = as_map(body)
        self.latest[device_id] = as_map(status.get("update")) if status is not None else None
        event = self.answered.get(device_id)
        if event is not None:
            event.set()

    async def start(self, device: Device, tag: str) -> Transfer:
        """Send release `tag` to `device`, with its owner's approval if there is one; the same
        release already on its way is left to run."""
        device_id = device.device_id
        running = self.transfers.get(device_id)
        if running is not None and running.outcome is None:
            if running.sender.release.tag == tag:
                return running
            raise UserError(f"{device_id} is receiving release {running.sender.release.tag}: wait for it")
        release = await asyncio.to_thread(self._release_for, tag, device.owner_id)
        if device_id not in self.latest and device.status is not None:
            self.latest[device_id] = as_map(device.status.get("update"))
        transfer = Transfer(device_id, Sender(release))
        self.transfers[device_id] = transfer
        await self.audit(
            "update", {"device": device_id, "release": tag, "approved": release.approval is not None}
        )
        transfer.task = asyncio.create_task(self._run(transfer))
        return transfer

    async def _run(self, transfer: Transfer) -> None:
        device_id = transfer.device_id
        answered = self.answered.setdefault(device_id, asyncio.Event())
        silent = 0
        try:
            while True:
                message = transfer.sender.next_message(self.latest.get(device_id))
                if message is None:
                    transfer.outcome = transfer.sender.outcome
                    break
                answered.clear()
                self.publish(topics.topic(device_id, "update"), message)
                try:
                    await asyncio.wait_for(answered.wait(), ANSWER_TIMEOUT_S)
                    silent = 0
                except TimeoutError:
                    silent += 1
                    if silent >= MAX_SILENT:
                        transfer.outcome = f"timeout: no answer for {silent * ANSWER_TIMEOUT_S:g} s"
                        break
        except asyncio.CancelledError:
            transfer.outcome = "stopped: the agent stopped"
            raise
        finally:
            await self.audit("update-outcome", {"device": device_id, **asdict(transfer.info())})

    def progress(self, device: Device) -> Progress:
        """The device's update state (its last status) and the agent's transfer to it, if any."""
        device_id = device.device_id
        if device_id in self.latest:
            update = self.latest[device_id]
        else:
            update = as_map((device.status or {}).get("update"))
        transfer = self.transfers.get(device_id)
        return Progress(
            device_id=device_id,
            state=summary(update),
            update=update,
            transfer=transfer.info() if transfer else None,
        )

    async def close(self) -> None:
        for transfer in self.transfers.values():
            if transfer.task is not None:
                transfer.task.cancel()
        await asyncio.gather(*(t.task for t in self.transfers.values() if t.task), return_exceptions=True)
