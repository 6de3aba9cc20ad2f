"""Shared test helpers: where the repo is and how to run code under the real MicroPython unix port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from host_agent.paths import tool_beside

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
BENCH = REPO / "bench"


def venv_tool(name: str) -> str:
    """The path of a command the install step puts in .venv (beside this interpreter), else on PATH."""
    found = tool_beside(name)
    if not found:
        raise RuntimeError(f"the {name} command is missing: run `bash scripts/install`")
    return found


def make_ca(folder: Path, name: str) -> Path:
    """A self-signed test CA (EC P-256) made by openssl: folder/name.pem and folder/name.key."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}"],
        cwd=folder, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return folder / f"{name}.pem"


def micropython_binary() -> str:
    """Return the path of the `micropython` command (the unix port): $FP_MICROPYTHON, else the venv's."""
    return os.environ.get("FP_MICROPYTHON") or venv_tool("micropython")


def micropython_env(extra_path: list[Path] | None = None) -> dict[str, str]:
    """Environment for the unix port: MICROPYPATH replaces the whole path, so keep `.frozen` in it."""
    paths = [".frozen", str(FIRMWARE), str(BENCH), *(str(p) for p in extra_path or [])]
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join(paths)
    return env


def run_firmware_script(interpreter: str, script: str, cwd: Path | None = None) -> str:
    """Run `script` with the firmware on its path under "micropython" (the unix port) or "cpython",
    in `cwd` (a flash folder); return stdout. AssertionError carrying stderr on a non-zero exit."""
    if interpreter == "micropython":
        command, env = [micropython_binary(), "-c", script], micropython_env()
    else:
        command, env = [sys.executable, "-c", script], {"PYTHONPATH": str(FIRMWARE)}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def run_micropython(
    script_text: str,
    stdin: str | bytes | None = None,
    timeout: float = 120,
    heapsize: str | None = None,
    extra_path: list[Path] | None = None,
) -> str:
    """Run `script_text` under the unix port with the firmware on its path; return stdout.

    Raises AssertionError carrying stderr when the interpreter exits non-zero.
    """
    command = [micropython_binary()]
    if heapsize:
        command += ["-X", f"heapsize={heapsize}"]
    command += ["-c", script_text]
    if isinstance(stdin, str):
        stdin = stdin.encode()
    result = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=micropython_env(extra_path),
        cwd=str(REPO),
    )
    if result.returncode != 0:
        raise AssertionError(
            f"micropython exited {result.returncode}\nstdout:\n{result.stdout.decode(errors='replace')}"
            f"\nstderr:\n{result.stderr.decode(errors='replace')}"
        )
    return result.stdout.decode()


WASM_PACKAGE = (
    REPO / "build" / "npm-wasm" / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
)


def run_micropython_wasm(
    script: Path, code: Path, flash: Path, romfs: Path | None = None, timeout: float = 120
) -> str:
    """Run `script` on the webassembly port from npm (32-bit) with `code` on its path and `flash` as
    its working directory (firmware/tools/wasm_run.mjs), code from the ROMFS image `romfs` first if
    given; return stdout, or raise with stderr."""
    runner = FIRMWARE / "tools" / "wasm_run.mjs"
    command = ["node", str(runner), str(WASM_PACKAGE), str(code), str(flash), str(script)]
    command += [str(romfs)] if romfs else []
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"the webassembly port exited {result.returncode}\n{result.stderr}")
    return result.stdout


def build_romfs(build: Path, image: Path) -> Path:
    """Pack a firmware build's fp/ folder into a ROMFS image, as `firstparty flash` does."""
    from host_agent.board.flash import build_romfs_image

    return build_romfs_image(build, image)


def owned_sim_flash(flash: Path, broker: tuple[str, int], work: Path) -> None:
    """A sim board's flash folder (HTTP API on, its seed fixed) owned by an owner key in `work`,
    with that owner's get-info for it in command.bin: firmware/tools/heap_steps.py sends it as the
    board's first owner command (judged, verified, applied)."""
    from nacl.signing import SigningKey

    from fp import ids
    from host_agent.owner import Owner
    from host_agent.rig.simdevice import SimDevice

    owner = Owner(work / "owner.key")
    SimDevice(flash, broker, owner_key=owner.public)
    seed = bytes(range(32))
    (flash / "key.seed").write_bytes(seed)
    device_id = ids.id_from_public_key(bytes(SigningKey(seed).verify_key))
    (flash / "command.bin").write_bytes(owner.command(device_id, "get-info", {}))


def romfs_code(work: Path, build: Path) -> tuple[Path, int]:
    """A code folder whose main.py mounts a ROMFS image of `build` at /rom (vfs.VfsRom over the
    image read into the heap: the unix port has no ROM partition) and then runs the firmware's
    main.py, which imports from /rom; returns it and the bytes the image takes in the heap."""
    image = build_romfs(build, work / "firmware.romfs")
    code = work / "romfs-code"
    code.mkdir()
    mount = (
        "import vfs\n"
        f"with open({str(image)!r}, 'rb') as _f:\n"
        "    _image = _f.read()\n"
        "vfs.mount(vfs.VfsRom(_image), '/rom')\n"
    )
    (code / "main.py").write_text(mount + (build / "main.py").read_text())
    size = image.stat().st_size
    return code, size + (-size % 16) + 16  # the bytes object: data rounded to GC blocks, its header


def wait_for(predicate, timeout_s: float = 10.0, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


async def wait_for_async(predicate, timeout_s: float = 10.0, what: str = "condition"):
    """wait_for on a running event loop: the loop runs while this polls."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
