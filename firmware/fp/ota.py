"""Updates over the air: a release's transfer over MQTT into the inactive slot, and its state.

Loaded only while an update runs: fp.device imports it for an update message (or to confirm a
release on probation, or at boot when there is an update state) and drops it again (its bytecode lives in the heap). The agent publishes on
`fp/v1/<id>/update` (docs/protocol.md section 13):

    [1, manifest, approval or null]          offer: start, or resume, this release
    [2, file index, offset, bytes, SHA-256]  one chunk, at most MAX_CHUNK_BYTES
    [3]                                      commit: every file sent; check, switch and reboot

and the device answers every message with its signed, retained status, whose `update` map says
where it stands (`state`, and while receiving `file`, `offset`, `received` of `total` bytes): the
sender sends the next chunk only once the status names the offset after the last one (a window
of one). Chunks are checked (fp.release.Transfer) and appended to the slot's files at once
(fp.slot_install.Installer): RAM holds one chunk and one hash state. After a reboot mid-transfer the same offer
resumes: the files already in the inactive slot are hashed again from flash, 512 bytes at a time.
"""

import asyncio
import hashlib
import os
import sys

from fp import cbor, const, ed25519, release, slot_install, slots, storage, topics
from fp.errors import ProtocolError
from fp.runtime import log
from fp.runtime import unload as unload_module

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any

    from fp.release import Hash
    from fp.slot_install import Installer
# The hooks' `device` is fp.device.Device, left unannotated: the boot module declares no attribute
# types (its typing guard would cost boot heap), and this module sets its `ota` and `update`.

UPDATE_FILE = storage.UPDATE_FILE
OFFER = 1
CHUNK = 2
COMMIT = 3
MAX_CHUNK_BYTES = 4096  # with its framing well inside the MQTT client's 8 KB packet limit
READ_BYTES = 512
# sys.implementation._mpy >> 10: the architecture of the .mpy files this interpreter runs
ARCHES = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp")
ARCHES += ("xtensa", "xtensawin", "rv32imc", "rv64imc")
# what the status's update map may say
IDLE = "idle"
RECEIVING = "receiving"
ON_PROBATION = "installed-on-probation"
CONFIRMED = "confirmed"
ROLLED_BACK = "rolled-back"
REFUSED = "refused"


def this_arch() -> "str | None":
    """The .mpy architecture of this interpreter ("x64", "xtensawin", ...), or None (CPython)."""
    mpy = getattr(sys.implementation, "_mpy", None)
    if mpy is None:
        return None
    index = mpy >> 10
    return ARCHES[index] if index < len(ARCHES) else None


def parse_message(data: bytes) -> "tuple[int, list[Any]]":
    """Return (kind, fields) of an update message, or raise ProtocolError("malformed")."""
    if len(data) > MAX_CHUNK_BYTES + release.MAX_MANIFEST_BYTES:
        raise ProtocolError("oversized", "an update message is at most %d bytes" % (MAX_CHUNK_BYTES + 8192))
    try:
        value = cbor.decode(data)
    except (ValueError, IndexError) as error:
        raise ProtocolError("malformed", "not CBOR: %s" % error)
    if not isinstance(value, list) or not value or value[0] not in (OFFER, CHUNK, COMMIT):
        raise ProtocolError("malformed", "an update message is [1|2|3, ...]")
    kind = value[0]
    if kind == OFFER:
        if (
            len(value) != 3
            or not isinstance(value[1], bytes)
            or not isinstance(value[2], (bytes, type(None)))
        ):
            raise ProtocolError("malformed", "an offer is [1, manifest, approval or null]")
    elif kind == CHUNK:
        if (
            len(value) != 5
            or not _is_uint(value[1])
            or not _is_uint(value[2])
            or not isinstance(value[3], bytes)
            or not isinstance(value[4], bytes)
            or len(value[3]) > MAX_CHUNK_BYTES
        ):
            raise ProtocolError(
                "malformed", "a chunk is [2, file, offset, bytes (<= %d), sha256]" % MAX_CHUNK_BYTES
            )
    elif len(value) != 1:
        raise ProtocolError("malformed", "a commit is [3]")
    return kind, value[1:]


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF


def encode_offer(manifest: bytes, approval: "bytes | None" = None) -> bytes:
    return cbor.encode([OFFER, manifest, approval])


def encode_chunk(index: int, offset: int, data: bytes) -> bytes:
    return cbor.encode([CHUNK, index, offset, data, hashlib.sha256(data).digest()])


def encode_commit() -> bytes:
    return cbor.encode([COMMIT])


def running_release(state: "dict[str, Any]", firmware_version: str) -> "tuple[tuple[int, ...], int]":
    """(version, counter) of the release this boot runs: its manifest's, else the firmware's with 0."""
    folder = state["trial"] or state["active"]
    path = (folder + "/" if folder else "") + slots.MANIFEST_FILE
    try:
        with open(path, "rb") as f:
            running = release.parse_release(f.read())
        return running.version, running.counter
    except (OSError, ProtocolError):
        return tuple(int(part) for part in firmware_version.split(".")), 0


def _hash_file(path: str, limit: int) -> "Hash":
    """SHA-256 state over the first `limit` bytes of `path`, read READ_BYTES at a time."""
    state = hashlib.sha256()
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    done = 0
    with open(path, "rb") as f:
        while done < limit:
            count = f.readinto(buffer)
            if not count:
                break
            count = min(count, limit - done)
            state.update(view[:count])
            done += count
    return state


def _file_size(path: str) -> int:
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def resume_point(installer: "Installer") -> bool:
    """Restore the installer's transfer from the files already in its slot; return True if any were."""
    slot = installer.slot
    try:
        with open(slot + "/" + slots.MANIFEST_FILE, "rb") as f:
            if f.read() != installer.manifest_bytes:
                return False
    except OSError:
        return False
    transfer = installer.transfer
    for index, (path, size, digest) in enumerate(installer.release.files):
        have = _file_size(slot + "/" + path)
        if have < 0 or have > size:
            transfer.restore(index, 0, hashlib.sha256())
            return True
        state = _hash_file(slot + "/" + path, have)
        if have < size:
            transfer.restore(index, have, state)
            return True
        if state.digest() != digest:
            transfer.restore(index, 0, hashlib.sha256())
            return True
    transfer.restore(len(installer.release.files), 0, hashlib.sha256())
    return True


class Session:
    """The transfer in progress: its installer and where it stands."""

    def __init__(self, installer: "Installer", manifest: bytes):
        self.installer = installer
        self.manifest = manifest
        self.total = sum(size for _, size, _ in installer.release.files)
        self.tag = hashlib.sha256(manifest).digest()[:8].hex()

    def state(self) -> "dict[str, Any]":
        transfer = self.installer.transfer
        files = self.installer.release.files
        received = sum(size for _, size, _ in files[: transfer.index]) + transfer.offset
        return {
            "state": RECEIVING,
            "release": self.tag,
            "version": list(self.installer.release.version),
            "file": transfer.index,
            "offset": transfer.offset,
            "received": received,
            "total": self.total,
        }


def record(device, state: "dict[str, Any]") -> None:
    """Keep `state` as the device's update state (in the status), in flash unless it is transient."""
    device.update = state
    if state.get("state") != RECEIVING:
        storage.save_json(UPDATE_FILE, state)


def refuse(device, error: ProtocolError, tag: "str | None" = None) -> None:
    device.ota = None
    state = {"state": REFUSED, "reason": error.reason}
    if tag:
        state["release"] = tag
    record(device, state)
    log("update refused: %s" % error)


def offer(device, manifest: bytes, approval: "bytes | None", firmware_version: str) -> None:
    """Check an offered release (fp.release.check_release) and start or resume its transfer."""
    session = device.ota
    if session is not None and session.manifest == manifest:
        return  # the sender asks where we stand: the status says it
    state = slots.load_state()
    tag = hashlib.sha256(manifest).digest()[:8].hex()
    try:
        if state["trial"] is not None:
            raise ProtocolError("on-probation", "the running release is on probation: confirm it first")
        parsed = release.parse_release(manifest)
        version, counter = running_release(state, firmware_version)
        vouched = release.check_release(
            parsed,
            approval,
            [bytes.fromhex(key) for key in device.provision.get("release_keys", ())],
            device.identity.owner_key,
            this_arch() or "x64",
            version,
            counter,
            ed25519.verify,
        )
    except ProtocolError as error:
        refuse(device, error, tag)
        return
    installer = slot_install.Installer(release, parsed, manifest, state)
    if not resume_point(installer):
        installer.begin()
    device.ota = Session(installer, manifest)
    record(device, device.ota.state())
    log(
        "update %s (%s) %d.%d.%d: from file %d at %d"
        % ((tag, vouched) + parsed.version + installer.transfer.resume_point())
    )


def chunk(device, index: int, offset: int, data: bytes, digest: bytes) -> None:
    session = device.ota
    try:
        session.installer.chunk(index, offset, data, digest)
    except ProtocolError as error:
        if error.reason != "out-of-order":  # a chunk sent again: the status says where we are
            refuse(device, error, session.tag)
            return
    record(device, session.state())


def commit(device) -> bool:
    """Switch to the received release (on probation) and reboot into it; True when it did."""
    session = device.ota
    try:
        installer = session.installer
        installer.commit()
    except ProtocolError as error:
        refuse(device, error, session.tag)
        return False
    device.ota = None
    record(
        device,
        {
            "state": ON_PROBATION,
            "release": session.tag,
            "version": list(installer.release.version),
            "slot": installer.slot,
        },
    )
    log("update %s installed: rebooting on probation" % session.tag)
    return True


def handle(device, data: bytes, firmware_version: str) -> bool:
    """Take one update message; return True when the device must reboot into a new release.

    Junk, and a chunk or commit with no transfer (the device rebooted meanwhile), change nothing:
    the status the device answers with says where it stands, and the sender offers again."""
    try:
        kind, fields = parse_message(data)
        if kind == OFFER:
            offer(device, fields[0], fields[1], firmware_version)
        elif device.ota is None:
            raise ProtocolError("out-of-order", "no transfer: offer the release first")
        elif kind == CHUNK:
            chunk(device, fields[0], fields[1], fields[2], fields[3])
        else:
            return commit(device)
    except ProtocolError as error:
        log("update message refused: %s" % error)
    except OSError as error:  # flash full or failing: the running release is untouched
        session = device.ota
        refuse(device, ProtocolError("flash-error", str(error)), session.tag if session else None)
    return False


def unload() -> None:
    """Drop this module and those only it uses: code loaded from .mpy lives in the heap."""
    for name in ("ota", "slot_install", "slots", "release", "cbor_decode", "cose"):
        unload_module(name)
    if "fp.receipted" not in sys.modules:  # a receipts destination parses with fp.inbound: it stays
        unload_module("inbound")


def publish_status(device) -> None:
    """Answer with the signed, retained status (its `update` map) on every broker that is up."""
    status = device.status("online")
    for destination in device.destinations.values():
        if destination.client.is_up:  # a task: the client's reader is the one running us
            asyncio.create_task(
                destination.client.publish(topics.topic(device.device_id, "status"), status, 1, True)
            )


def on_message(device, data: bytes, firmware_version: str) -> None:
    """fp.device's hook for a message on the update topic."""
    is_installed = handle(device, data, firmware_version)
    publish_status(device)
    if device.ota is None:
        unload()
    if is_installed:
        asyncio.create_task(device.reboot_soon())


def check_probation(device) -> None:
    """fp.device's hook once a reading was delivered (per each destination's delivery rule: a receipt,
    or the broker's PUBACK) while the update state is on probation: confirm the release if this
    boot runs it (main.py put its slot on sys.path), not the old one about to reboot into it."""
    if device.update.get("slot") in sys.path:
        confirm(device)
        publish_status(device)
    unload()


def at_boot(update: "Any") -> "dict[str, Any] | None":
    """The update state at boot, from the one kept in flash (None: no update ever): the release a
    boot runs from a trial slot is on probation (main.py put its folder on sys.path); one that was
    installed on probation and is not running now got confirmed (active) or rolled back."""
    state = slots.load_state()
    trial = state["trial"]
    if not isinstance(update, dict):
        update = None
    if trial is not None and trial in sys.path:
        if update is None or update.get("state") != ON_PROBATION or update.get("slot") != trial:
            update = {"state": ON_PROBATION, "slot": trial}  # installed by other means (fp.slots)
    elif update is not None and update.get("state") == ON_PROBATION:
        update = dict(update, state=CONFIRMED if state["active"] == update.get("slot") else ROLLED_BACK)
        storage.save_json(UPDATE_FILE, update)
    unload()
    return update


def confirm(device) -> None:
    """The release on probation delivered its first reading: make it the active release."""
    slot_install.confirm_trial()
    record(device, dict(device.update, state=CONFIRMED))
    log("update %s confirmed by its first delivered reading" % device.update.get("release"))
