"""Make a firmware release: build its files and manifest, then sign it with a release or owner key.

`firstparty release build` compiles the firmware for one architecture into FOLDER/files and writes
FOLDER/release.json (version, architecture, anti-rollback counter, minimum version, every file's
size and SHA-256). `firstparty release sign FOLDER --key SEED_FILE` checks the files against it and
writes FOLDER/manifest.cose, the signed manifest (fp.release, docs/protocol.md section 12); the
key is a vendor's release key or the owner's (an owner builds and signs their own firmware), a
32-byte Ed25519 seed created on first use. `--approve` instead writes FOLDER/approval.cose, the
owner's approval of a vendor-signed manifest already in the folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import TypedDict

from fp import release as fp_release
from fp.errors import ProtocolError
from host_agent.board.build import ARCHES, compile_firmware
from host_agent.errors import UserError
from host_agent.owner import Owner

RELEASE_FILE = "release.json"
MANIFEST_FILE = "manifest.cose"
APPROVAL_FILE = "approval.cose"


class Listing(TypedDict):
    """FOLDER/release.json: what `release build` compiled, for `release sign` to check and sign."""

    version: list[int]  # [major, minor, patch]
    arch: str
    counter: int
    min_from: list[int]
    files: list[tuple[str, int, str]]  # [path, size, SHA-256 hex]: a JSON array each


def _version(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"(\d{1,5})\.(\d{1,5})\.(\d{1,5})", text)
    if not match or any(int(part) > 0xFFFF for part in match.groups()):
        raise argparse.ArgumentTypeError(f"expected MAJOR.MINOR.PATCH (each 0..65535), found {text!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def _counter(text: str) -> int:
    if not text.isdigit() or int(text) > 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"expected an integer 0..4294967295, found {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="release_command", metavar="build|sign", required=True)
    build = sub.add_parser("build", help="compile the firmware into FOLDER/files and list it in release.json")
    build.add_argument("folder", type=Path, help="the release folder to write (replaced if it exists)")
    build.add_argument("--arch", choices=[a for a in ARCHES if a != "none"], required=True)
    build.add_argument("--version", type=_version, required=True, help="MAJOR.MINOR.PATCH")
    build.add_argument("--counter", type=_counter, required=True, help="anti-rollback counter")
    build.add_argument(
        "--min-from", type=_version, default=(0, 0, 0), help="oldest version it updates (default 0.0.0)"
    )
    sign = sub.add_parser("sign", help="sign FOLDER's manifest (or, with --approve, approve it)")
    sign.add_argument("folder", type=Path, help="a folder made by `firstparty release build`")
    sign.add_argument("--key", type=Path, required=True, help="Ed25519 seed file (created if missing)")
    sign.add_argument(
        "--approve", action="store_true", help="write the owner's approval of the vendor-signed manifest"
    )


def build(
    folder: Path, arch: str, version: tuple[int, int, int], counter: int, min_from: tuple[int, int, int]
) -> Listing:
    if folder.exists():
        shutil.rmtree(folder)
    compiled = compile_firmware(arch, folder / "files")
    files: list[tuple[str, int, str]] = []
    for path in sorted(p for p in compiled.path.rglob("*") if p.is_file()):
        data = path.read_bytes()
        files.append(
            (path.relative_to(compiled.path).as_posix(), len(data), hashlib.sha256(data).hexdigest())
        )
    listing = Listing(version=list(version), arch=arch, counter=counter, min_from=list(min_from), files=files)
    (folder / RELEASE_FILE).write_text(json.dumps(listing, indent=1) + "\n")
    return listing


def _listing(folder: Path) -> Listing:
    try:
        # written by `release build`; what a hand-edited one gets wrong, the device's parser refuses
        listing: Listing = json.loads((folder / RELEASE_FILE).read_text())
    except (OSError, ValueError) as error:
        raise UserError(
            f"{folder / RELEASE_FILE}: {error}; make it with `firstparty release build`"
        ) from None
    for path, size, digest in listing["files"]:
        data = (folder / "files" / path).read_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise UserError(f"{folder / 'files' / path} changed since release.json was written: build again")
    return listing


def sign(folder: Path, key_path: Path) -> bytes:
    listing = _listing(folder)
    key = Owner(key_path)
    files = [(path, size, bytes.fromhex(digest)) for path, size, digest in listing["files"]]
    try:
        manifest = fp_release.encode_release(
            key.sign,
            key.public,
            listing["version"],
            listing["arch"],
            listing["counter"],
            listing["min_from"],
            files,
        )
        fp_release.parse_release(manifest)  # the device's own parser accepts it
    except ProtocolError as error:
        raise UserError(f"{folder / RELEASE_FILE}: {error}") from None
    (folder / MANIFEST_FILE).write_bytes(manifest)
    return manifest


def approve(folder: Path, key_path: Path) -> bytes:
    try:
        manifest = (folder / MANIFEST_FILE).read_bytes()
        fp_release.parse_release(manifest)
    except OSError:
        raise UserError(f"{folder / MANIFEST_FILE} is missing: the vendor signs the release first") from None
    except ProtocolError as error:
        raise UserError(f"{folder / MANIFEST_FILE}: {error}") from None
    key = Owner(key_path)
    approval = fp_release.encode_approval(key.sign, key.public, manifest)
    (folder / APPROVAL_FILE).write_bytes(approval)
    return approval


def run(args: argparse.Namespace) -> int:
    if args.release_command == "build":
        listing = build(args.folder, args.arch, args.version, args.counter, args.min_from)
        version = ".".join(str(part) for part in listing["version"])
        print(
            f"release {version} for {listing['arch']}: {len(listing['files'])} files in {args.folder / 'files'}"
        )
        print(f"  next: firstparty release sign {args.folder} --key RELEASE_KEY")
        return 0
    if args.approve:
        approve(args.folder, args.key)
        print(f"approved: {args.folder / APPROVAL_FILE}")
        return 0
    sign(args.folder, args.key)
    print(f"signed: {args.folder / MANIFEST_FILE}")
    return 0
