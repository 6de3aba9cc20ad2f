"""`firstparty release build|sign`: a release the device's own checks (fp.release) accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from fp import ed25519, release
from fp.errors import ProtocolError
from host_agent.cli.main import main
from host_agent.owner import Owner


def check(folder: Path, vendor: Owner, owner_key: bytes | None, with_approval: bool = False) -> str:
    parsed = release.parse_release((folder / "manifest.cose").read_bytes())
    approval = (folder / "approval.cose").read_bytes() if with_approval else None
    return release.check_release(
        parsed, approval, [vendor.public], owner_key, "x64", (0, 1, 0), 1, ed25519.verify
    )


def test_built_and_signed_release_is_accepted_by_the_device_rules(tmp_path, capsys):
    folder = tmp_path / "rel"
    assert (
        main(["release", "build", str(folder), "--arch", "x64", "--version", "0.2.0", "--counter", "2"]) == 0
    )
    assert (folder / "files" / "main.py").exists() and (folder / "release.json").exists()
    assert main(["release", "sign", str(folder), "--key", str(tmp_path / "vendor.key")]) == 0
    vendor, owner = Owner(tmp_path / "vendor.key"), Owner(tmp_path / "owner.key")
    assert check(folder, vendor, None) == "vendor"
    with pytest.raises(ProtocolError) as refused:  # a claimed device: not without its owner
        check(folder, vendor, owner.public)
    assert refused.value.reason == "not-approved"
    assert main(["release", "sign", str(folder), "--key", str(tmp_path / "owner.key"), "--approve"]) == 0
    assert check(folder, vendor, owner.public, with_approval=True) == "vendor+owner"
    parsed = release.parse_release((folder / "manifest.cose").read_bytes())
    listed = {path: size for path, size, _ in parsed.files}
    for path, size in listed.items():
        assert (folder / "files" / path).stat().st_size == size
    assert "signed:" in capsys.readouterr().out


def test_signing_refuses_files_changed_after_the_build_in_one_line(tmp_path, capsys):
    folder = tmp_path / "rel"
    main(["release", "build", str(folder), "--arch", "x64", "--version", "0.2.0", "--counter", "2"])
    (folder / "files" / "main.py").write_text("print('not what was built')\n")
    assert main(["release", "sign", str(folder), "--key", str(tmp_path / "vendor.key")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "changed since release.json" in error and "Traceback" not in error
    assert not (folder / "manifest.cose").exists()


def test_approving_without_a_vendor_signature_is_refused(tmp_path, capsys):
    folder = tmp_path / "rel"
    main(["release", "build", str(folder), "--arch", "x64", "--version", "0.2.0", "--counter", "2"])
    assert main(["release", "sign", str(folder), "--key", str(tmp_path / "owner.key"), "--approve"]) == 2
    assert "the vendor signs the release first" in capsys.readouterr().err


def test_an_owner_signed_release_needs_no_vendor(tmp_path):
    folder = tmp_path / "rel"
    main(["release", "build", str(folder), "--arch", "x64", "--version", "0.0.9", "--counter", "0"])
    main(["release", "sign", str(folder), "--key", str(tmp_path / "owner.key")])
    owner = Owner(tmp_path / "owner.key")
    assert check(folder, Owner(tmp_path / "vendor.key"), owner.public) == "owner"  # a downgrade, owner-signed
