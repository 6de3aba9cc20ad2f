"""Firmware releases: the signed manifest, who may install it, and the check of a streamed transfer.

A release is the firmware's files for one architecture plus a manifest, a COSE_Sign1 (content type
65210) whose payload is the CBOR map

    {"version": [major, minor, patch], "arch": str, "counter": uint, "min_from": [major, minor, patch],
     "files": [[path, size, SHA-256], ...]}

signed by a vendor's release key or by the owner (claim `iss` (1): the signer's id). An owner
approves a vendor release with an approval, a COSE_Sign1 (content type 65211) by the owner key
whose payload is the SHA-256 of the manifest's bytes. Pure decisions: keys, the device's state and
`verify` are passed in; reading and writing flash is the caller's (docs/protocol.md section 12).
"""

import hashlib

from fp import cbor, const, cose
from fp.errors import ProtocolError
from fp.ids import id_from_public_key

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    from typing import Any, Callable, Sequence

    Version = tuple[int, int, int]  # (major, minor, patch)
    File = tuple[str, int, bytes]  # (path, size, SHA-256)
    Sign = Callable[[bytes], bytes]  # Ed25519: the 64-byte signature of the bytes given
    Verify = Callable[[bytes, bytes, bytes], Any]  # (public key, data, signature); raises if bad
    Hash = Any  # a hashlib.sha256() state: each interpreter names its class differently

CT_RELEASE = 65210
CT_APPROVAL = 65211
MAX_MANIFEST_BYTES = 8192
MAX_FILES = 64
MAX_FILE_BYTES = 1 << 20
CLAIM_ISS = 1
_PATH_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789_-./"  # bytes: see fp.ids._ALPHABET


class Release:
    """A parsed, not yet trusted, release manifest."""

    def __init__(
        self,
        message: cose.Sign1,
        signer_id: str,
        version: "Version",
        arch: str,
        counter: int,
        min_from: "Version",
        files: "list[File]",
    ):
        self.message = message
        self.signer_id = signer_id
        self.version = version
        self.arch = arch
        self.counter = counter
        self.min_from = min_from
        self.files = files  # [(path, size, sha256), ...]

    def digest(self) -> bytes:
        """SHA-256 of the manifest's bytes: what an owner's approval signs."""
        return hashlib.sha256(self.message.raw).digest()


def _version(value: object, name: str) -> "Version":
    if not isinstance(value, list) or len(value) != 3:
        raise ProtocolError("malformed", "%s must be [major, minor, patch]" % name)
    for part in value:
        if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part <= 0xFFFF:
            raise ProtocolError("malformed", "%s parts must be integers 0..65535" % name)
    return tuple(value)


def _path(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64 or value.startswith("/"):
        raise ProtocolError("malformed", "a file path must be relative and 1..64 characters")
    for part in value.split("/"):
        if part in ("", ".", ".."):
            raise ProtocolError("malformed", "file path %r leaves the release folder" % value)
    for byte in value.encode():
        if byte not in _PATH_CHARS:
            raise ProtocolError("malformed", "file path %r has a character outside a-z 0-9 _-./" % value)
    return value


def encode_release(
    sign: "Sign",
    signer_public_key: bytes,
    version: "Sequence[int]",
    arch: str,
    counter: int,
    min_from: "Sequence[int]",
    files: "Sequence[File]",
) -> bytes:
    """Build a release manifest signed by `sign` (the vendor's release key or the owner's)."""
    payload = {
        "version": list(version),
        "arch": arch,
        "counter": counter,
        "min_from": list(min_from),
        "files": [[path, size, digest] for path, size, digest in files],
    }
    protected = {
        cose.H_ALG: cose.ALG_EDDSA,
        cose.H_CONTENT_TYPE: CT_RELEASE,
        cose.H_CWT_CLAIMS: {CLAIM_ISS: id_from_public_key(signer_public_key)},
    }
    return cose.sign1(sign, protected, cbor.encode(payload))


def encode_approval(sign: "Sign", owner_public_key: bytes, manifest_bytes: bytes) -> bytes:
    """Build the owner's approval of the release whose manifest is `manifest_bytes`."""
    protected = {
        cose.H_ALG: cose.ALG_EDDSA,
        cose.H_CONTENT_TYPE: CT_APPROVAL,
        cose.H_CWT_CLAIMS: {CLAIM_ISS: id_from_public_key(owner_public_key)},
    }
    return cose.sign1(sign, protected, hashlib.sha256(manifest_bytes).digest())


def parse_release(data: bytes) -> Release:
    """Parse manifest bytes into a Release or raise ProtocolError; checks no signature."""
    message = cose.parse_sign1(data, MAX_MANIFEST_BYTES)
    if message.content_type != CT_RELEASE:
        raise ProtocolError("wrong-kind", "content type %r is not a release" % (message.content_type,))
    signer_id = message.claims.get(CLAIM_ISS)
    if not isinstance(signer_id, str):
        raise ProtocolError("malformed", "a release names its signer (claim iss)")
    body = cbor.decode(message.payload)
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "the manifest must be a map")
    arch = body.get("arch")
    counter = body.get("counter")
    files = body.get("files")
    if not isinstance(arch, str) or not 0 < len(arch) <= 16:
        raise ProtocolError("malformed", "arch must be a short string")
    if not isinstance(counter, int) or isinstance(counter, bool) or not 0 <= counter <= 0xFFFFFFFF:
        raise ProtocolError("malformed", "counter must be a uint32")
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        raise ProtocolError("malformed", "files must list 1..%d files" % MAX_FILES)
    checked = []
    seen = []
    for entry in files:
        if not isinstance(entry, list) or len(entry) != 3:
            raise ProtocolError("malformed", "a file is [path, size, sha256]")
        path, size, digest = _path(entry[0]), entry[1], entry[2]
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
            raise ProtocolError("malformed", "size of %s must be 0..%d" % (path, MAX_FILE_BYTES))
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise ProtocolError("malformed", "the SHA-256 of %s must be 32 bytes" % path)
        if path in seen:
            raise ProtocolError("malformed", "%s is listed twice" % path)
        seen.append(path)
        checked.append((path, size, digest))
    return Release(
        message,
        signer_id,
        _version(body.get("version"), "version"),
        arch,
        counter,
        _version(body.get("min_from"), "min_from"),
        checked,
    )


def check_release(
    release: Release,
    approval: "bytes | None",
    vendor_keys: "list[bytes]",
    owner_key: "bytes | None",
    arch: str,
    running_version: "tuple[int, ...]",
    running_counter: int,
    verify: "Verify",
) -> str:
    """Decide whether this device may install `release`; return who vouches: "owner", "vendor+owner"
    or "vendor" (an unclaimed device follows its vendor), or raise ProtocolError.

    `approval` is the owner's approval bytes or None; `vendor_keys` the release keys the device was
    flashed to trust; `owner_key` None while unclaimed. An owner-signed release may go back to an
    older counter (an explicit downgrade); a vendor release never can.
    """
    signer_key = None
    is_owner = owner_key is not None and release.signer_id == id_from_public_key(owner_key)
    if is_owner:
        signer_key = owner_key
    else:
        for key in vendor_keys:
            if release.signer_id == id_from_public_key(key):
                signer_key = key
    if signer_key is None:
        raise ProtocolError(
            "unknown-key", "release signed by %s, a key this device does not trust" % release.signer_id
        )
    cose.verify_sign1(release.message, signer_key, verify)
    if release.arch != arch:
        raise ProtocolError("wrong-arch", "release for %s, this device runs %s" % (release.arch, arch))
    if tuple(running_version) < release.min_from:
        raise ProtocolError(
            "too-old",
            "release updates from %r on; this device runs %r" % (release.min_from, tuple(running_version)),
        )
    if release.counter < running_counter and not is_owner:
        raise ProtocolError("rollback", "counter %d is older than %d" % (release.counter, running_counter))
    if is_owner:
        return "owner"
    if owner_key is None:
        return "vendor"
    if approval is None:
        raise ProtocolError(
            "not-approved", "a claimed device installs a vendor release only with its owner's approval"
        )
    message = cose.parse_sign1(approval, 512)
    if message.content_type != CT_APPROVAL:
        raise ProtocolError("wrong-kind", "content type %r is not an approval" % (message.content_type,))
    cose.verify_sign1(message, owner_key, verify)
    if message.payload != release.digest():
        raise ProtocolError("not-approved", "the owner approved another release")
    return "vendor+owner"


class Transfer:
    """Checks a release's files as they stream in: chunks in order, each chunk's SHA-256, no byte
    past a file's size, each file's SHA-256 at its end. Holds one hash state, never a file."""

    def __init__(self, release: Release):
        self.files = release.files
        self.index = 0  # the file being received
        self.offset = 0  # bytes of it received
        self._hash = hashlib.sha256()

    def accept(self, index: int, offset: int, data: bytes, chunk_digest: bytes) -> bool:
        """Check one chunk (file `index`, at `offset`); the caller writes it only if this returns."""
        if index != self.index or offset != self.offset:
            raise ProtocolError("out-of-order", "expected file %d at %d" % (self.index, self.offset))
        if hashlib.sha256(data).digest() != chunk_digest:
            raise ProtocolError(
                "bad-chunk", "chunk of file %d at %d does not match its SHA-256" % (index, offset)
            )
        path, size, digest = self.files[index]
        if offset + len(data) > size:
            raise ProtocolError("oversized", "%s is %d bytes" % (path, size))
        self._hash.update(data)
        self.offset += len(data)
        if self.offset == size:
            if self._hash.digest() != digest:
                raise ProtocolError("tampered", "%s does not match the manifest's SHA-256" % path)
            self.index += 1
            self.offset = 0
            self._hash = hashlib.sha256()
        return self.index == len(self.files)

    def restore(self, index: int, offset: int, hash_state: "Hash") -> None:
        """Continue after what is already written: file `index` at `offset`, hashed into `hash_state`
        (fp.ota, after a reboot mid-transfer)."""
        self.index, self.offset, self._hash = index, offset, hash_state

    def resume_point(self) -> "tuple[int, int]":
        """(file index, offset) the sender continues from."""
        return self.index, self.offset

    def finish(self) -> None:
        """Raise unless every file arrived whole."""
        while self.index < len(self.files) and self.files[self.index][1] == 0 and self.offset == 0:
            self.accept(self.index, 0, b"", hashlib.sha256(b"").digest())
        if self.index != len(self.files):
            raise ProtocolError("truncated", "file %d of %d incomplete" % (self.index + 1, len(self.files)))
