"""Flash a board: base image (optional), firmware, board file and provisioning, then read its card.

Steps, each printed as it happens: pick the serial port, check the board answers and is the
chip its board file names, write the MicroPython image with esptool (only a file the user names;
nothing is ever downloaded), compile the firmware with mpy-cross for the board's architecture
(host_agent.board.build), check it fits, put it on the board with mpremote (a ROMFS image written to
the board's ROMFS partition when `mpremote romfs query` shows one, so the code runs in place from
flash and not from the heap; else the `.mpy` files copied to its file system), write `board.json` and
`provision.json` (vendor endpoint, Wi-Fi from a local file, the owner's public key: physical
access at flash time is the proof of ownership), read back the device card, reset and wait for
the firmware to boot. Works the same on `/dev/ttyUSB0` and on a virtual board's pty.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from host_agent import config as agent_config
from host_agent.api.client import RUNTIME_FILE, call_agent
from host_agent.board import files as boards
from host_agent.board.build import compile_firmware
from host_agent.board.files import Board
from host_agent.errors import UserError
from host_agent.paths import tool_beside

# Where the base image goes: ESP32 has its second-stage bootloader at 0x1000, the newer chips at 0.
IMAGE_OFFSETS = {"esp32": 0x1000}
MPREMOTE_TIMEOUT_S = 60
ROMFS_DEPLOY_TIMEOUT_S = 300  # ~100 KB over a 115200-baud serial line, block by block
BOOT_TIMEOUT_S = 30
HEADROOM_BYTES = 16384  # the firmware writes key, counters, config and its flash buffer at run time

# Run on the device: who it is and how much room the firmware may use.
_PROBE = """
import os, sys
try:
    machine = os.uname().machine
except Exception:
    machine = ''
def _fp_size(path):
    total = 0
    try:
        names = os.listdir(path)
    except OSError:
        return 0
    for name in names:
        full = path + '/' + name
        mode = os.stat(full)[0]
        total += _fp_size(full) if mode & 0x4000 else os.stat(full)[6]
    return total
stat = os.statvfs('/')
print('FP-PROBE', sys.platform, stat[0] * stat[3] + _fp_size('fp'), '|' + machine)
"""

# Run on the device after the copy: the card, computed by the firmware's own code (fp.identity).
_CARD = """
from fp import identity
print('FP-CARD', identity.card_at_flash().hex())
"""
# Run on the device with the card: its password for the agent's broker, computed from its seed there
# (the seed never leaves the board; the password crosses this serial line once, to be hashed).
_PASSWORD = """
print('FP-PASSWORD', ids.broker_password(storage.load_seed(), %r, %d))
"""


def say(step: str) -> None:
    print(f"flash: {step}", flush=True)


@dataclass
class Probe:
    platform: str
    machine: str
    free_bytes: int


def pick_port(port: str | None) -> str:
    """The port named, or the only USB serial port there is (as mpremote's auto does)."""
    if port:
        return port
    from serial.tools import list_ports

    usb = sorted(p.device for p in list_ports.comports() if p.vid is not None)
    if not usb:
        raise UserError(
            "no USB serial port found: plug the board in with a data cable, or name it with --port"
        )
    if len(usb) > 1:
        raise UserError(f"several serial ports ({', '.join(usb)}): name the board's with --port")
    return usb[0]


def check_port(port: str) -> None:
    if not os.path.exists(port):
        raise UserError(f"no serial device at {port}: check the cable, or pick another with --port")
    if not os.access(port, os.R_OK | os.W_OK):
        raise UserError(
            f"permission denied on {port}: add yourself to its group (sudo usermod -aG dialout $USER), log in again"
        )


def check_chip(board: Board, probe: Probe) -> None:
    """Refuse a board that is not the chip its file names (a C3 flashed with xtensawin code never boots)."""
    if board["port"] == "unix":
        found_ok = probe.platform == "linux"
    else:
        machine = probe.machine.upper().replace("-", "")
        chip = board["chip"].upper().replace("-", "")
        others = ("ESP32S2", "ESP32S3", "ESP32C3", "ESP32C6", "ESP32H2")
        found_ok = probe.platform == board["port"] and chip in machine
        if chip == "ESP32":
            found_ok = found_ok and not any(other in machine for other in others)
    if not found_ok:
        found = probe.machine or probe.platform
        raise UserError(
            f"wrong chip: board {board['name']} is {board['chip']}, the device says {found!r}; pick its --board"
        )


def mpremote_command() -> str:
    found = tool_beside("mpremote")
    if not found:
        raise UserError("mpremote is missing: run `bash scripts/install`")
    return found


def mpremote(port: str, *args: str, timeout_s: float | None = None) -> str:
    """Run `mpremote connect PORT ARGS`; return stdout, or raise one line saying what went wrong."""
    timeout_s = timeout_s or MPREMOTE_TIMEOUT_S
    try:
        result = subprocess.run(
            [mpremote_command(), "connect", port, *args], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as error:
        raise UserError(
            f"the board on {port} is not answering (no REPL within {timeout_s:.0f} s): press its reset button, or "
            "hold BOOT while resetting and flash a MicroPython image with --image"
        ) from error
    if result.returncode != 0:
        text = (result.stderr or result.stdout).strip()
        if "Permission denied" in text:
            raise UserError(
                f"permission denied on {port}: add yourself to its group (sudo usermod -aG dialout $USER)"
            )
        if "could not enter raw repl" in text or "failed to access" in text or "no device found" in text:
            raise UserError(
                f"the board on {port} is not answering: is MicroPython on it? (flash an image with --image)"
            )
        last = text.splitlines()[-1] if text else f"exit status {result.returncode}"
        raise UserError(f"mpremote {' '.join(args[:2])} failed on {port}: {last}")
    return result.stdout


def parse_romfs_query(out: str) -> int | None:
    """The size in bytes of ROMFS partition 0 in `mpremote romfs query`'s output, or None: none."""
    for line in out.splitlines():
        found = re.match(r"ROMFS0 partition has size (\d+) bytes", line.strip())
        if found:
            return int(found.group(1))
    return None  # "ROMFS is not enabled on this device", "No ROMFS partitions available"


def romfs_partition(port: str) -> int | None:
    """The size of the board's ROMFS partition (MicroPython >= 1.25 on a board that has one), or None."""
    try:
        return parse_romfs_query(mpremote(port, "romfs", "query"))
    except UserError:  # an older MicroPython: no `romfs` support on the device side
        return None


def build_romfs_image(build: Path, image: Path, folder: str = "fp") -> Path:
    """Pack a firmware build's fp/ folder (its .mpy files and the Ed25519 table) into a ROMFS image
    with `mpremote romfs build`; on the board it mounts at /rom, where main.py imports it from."""
    source = image.with_suffix(".src")
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(build / folder, source / folder)
    command = [mpremote_command(), "romfs", "--no-mpy", "-o", str(image), "build", str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=MPREMOTE_TIMEOUT_S)
    if result.returncode != 0:
        text = (result.stderr or result.stdout).strip()
        raise UserError(
            f"mpremote romfs build failed: {text.splitlines()[-1] if text else result.returncode}"
        )
    return image


def probe(port: str) -> Probe:
    out = mpremote(port, "exec", _PROBE)
    for line in out.splitlines():
        if line.startswith("FP-PROBE "):
            words, _, machine = line.partition("|")
            _, platform, free = words.split()
            return Probe(platform, machine.strip(), int(free))
    raise UserError(f"the board on {port} answered but not as MicroPython does: {out.strip()[:80]!r}")


def write_image(board: Board, port: str, image: Path) -> None:
    if not image.is_file():
        raise UserError(
            f"image {image} is missing: name a MicroPython .bin you downloaded for {board['name']}"
        )
    if board["port"] != "esp32":
        raise UserError(
            f"board {board['name']} takes no base image (it is the {board['port']} port); drop --image"
        )
    offset = IMAGE_OFFSETS.get(board["chip"], 0)
    command = [sys.executable, "-m", "esptool", "--chip", board["chip"], "--port", port, "--baud", "460800"]
    command += ["write_flash", "-z", hex(offset), str(image)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as error:
        raise UserError(
            f"esptool did not finish on {port} in 300 s: hold BOOT, press EN, try again"
        ) from error
    text = result.stdout + result.stderr
    if result.returncode != 0:
        if "Wrong --chip" in text or "This chip is" in text:
            raise UserError(
                f"wrong chip: board {board['name']} is {board['chip']} but esptool found another; pick its --board"
            )
        if "Permission denied" in text:
            raise UserError(
                f"permission denied on {port}: add yourself to its group (sudo usermod -aG dialout $USER)"
            )
        if "Failed to connect" in text:
            raise UserError(f"the chip on {port} is not answering esptool: hold BOOT, press EN, try again")
        raise UserError(
            f"esptool failed: {text.strip().splitlines()[-1] if text.strip() else result.returncode}"
        )
    time.sleep(2)  # the chip resets into the new image


def read_wifi(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        data: object = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise UserError(f"Wi-Fi file {path} is missing") from error
    except (OSError, ValueError) as error:
        raise UserError(
            f'Wi-Fi file {path}: expected JSON {{"ssid": ..., "password": ...}} ({error})'
        ) from error
    wifi = cast(dict[str, object], data) if isinstance(data, dict) else {}  # JSON: string keys
    ssid, password = wifi.get("ssid"), wifi.get("password", "")
    if not isinstance(data, dict) or not isinstance(ssid, str) or not ssid:
        raise UserError(f"Wi-Fi file {path}: key 'ssid' must be a non-empty string, found {data!r:.60}")
    if not isinstance(password, str):
        raise UserError(f"Wi-Fi file {path}: key 'password' must be a string")
    return {"ssid": ssid, "password": password}


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeError) as error:
        raise UserError(f"{what} file {path}: {getattr(error, 'strerror', None) or error}") from None


def read_ca(path: Path | None) -> str | None:
    """The vendor's CA certificates (PEM; a bundle keeps every one) for TLS, checked as the firmware
    will read them, without what may stand around them in the file."""
    if path is None:
        return None
    from fp import pem

    try:
        certificates = pem.certificates(_read_text(path, "CA"))
    except ValueError as error:
        raise UserError(f"CA file {path}: expected PEM certificates ({error})") from None
    return "".join(pem.encode("CERTIFICATE", der) for der in certificates)


def read_client_identity(cert_path: Path | None, key_path: Path | None) -> dict[str, str]:
    """The device's client certificate and private key from the vendor's files (PEM, or DER as
    some consoles give them), as the PEM text provision.json holds; {} when none is given."""
    if cert_path is None and key_path is None:
        return {}
    if cert_path is None or key_path is None:
        raise UserError("--client-cert and --client-key go together: give both files the vendor issued")
    from fp import pem

    found: dict[str, str] = {}
    for path, what, label in ((cert_path, "client certificate", "CERTIFICATE"), (key_path, "client key", "")):
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise UserError(f"{what} file {path}: {error.strerror}") from None
        try:
            if label:
                der = pem.der_or_pem(raw, "certificate")
                found["client_cert"] = pem.encode(label, der)
            else:
                der = pem.der_or_pem(raw, "key")
                found["client_key"] = pem.encode(pem.key_label(der), der)
        except (ValueError, UnicodeError) as error:
            expected = "a PEM or DER certificate" if label else "a PEM or DER private key"
            raise UserError(f"{what} file {path}: expected {expected} ({error})") from None
    _check_pair(found["client_cert"], found["client_key"], cert_path, key_path)
    return found


def _check_pair(cert_pem: str, key_pem: str, cert_path: Path, key_path: Path) -> None:
    """Refuse a key that does not belong to the certificate (the broker would refuse the device)."""
    import ssl

    with tempfile.TemporaryDirectory(prefix="firstparty-identity-") as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_text(cert_pem)
        key_file.write_text(key_pem)
        key_file.chmod(0o600)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_file, key_file)
        except ssl.SSLError as error:
            raise UserError(
                f"client key {key_path} does not belong to client certificate {cert_path} ({error.reason})"
            ) from None


def parse_endpoint(text: str) -> dict[str, object]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--vendor {text!r}: expected HOST:PORT, e.g. mqtt.vendor.example:8883")
    return {"host": host, "port": int(port)}


def read_receipt_key(text: str) -> str:
    """The vendor agent's receipt key (receipt_key_hex of its GET /owner) as the device stores it."""
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise UserError(
            f"--vendor-receipt-key: expected the vendor agent's receipt key as 64 hex digits "
            f"(receipt_key_hex of its GET /owner), found {text[:70]!r}"
        )
    return text.lower()


def read_release_keys(keys: list[str]) -> list[str]:
    """The vendor's release keys as the device stores them (fp.settings checks them again)."""
    if len(keys) > 4:
        raise UserError(f"--release-key: at most 4 keys, found {len(keys)}")
    for text in keys:
        if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise UserError(
                f"--release-key: expected an Ed25519 public key as 64 hex digits, found {text[:70]!r}"
            )
    return [text.lower() for text in keys]


def owner_public_key(args: argparse.Namespace) -> bytes:
    from host_agent.owner import Owner

    if args.owner_key:
        return Owner(args.owner_key).public
    return Owner(agent_config.resolve(args.config).owner_key).public


def wait_for_boot(port: str, timeout_s: float = BOOT_TIMEOUT_S) -> str:
    """Soft-reset from the friendly REPL (boot.py, main.py run) and return the id the firmware prints."""
    import serial

    with serial.Serial(port, 115200, timeout=0.1) as link:
        link.write(b"\r\x03\x03\r\x02")  # stop whatever runs, friendly REPL
        time.sleep(0.3)
        link.reset_input_buffer()
        link.write(b"\x04")  # soft reset: the board runs boot.py then main.py
        seen = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen += link.read(256)
            for line in seen.splitlines():
                if line.startswith(b"fp: device "):
                    return line.split()[2].decode()
    tail = seen.decode(errors="replace").strip().splitlines()[-1:] or ["nothing"]
    raise UserError(
        f"the firmware did not start within {timeout_s:.0f} s after reset; last line: {tail[0][:100]}"
    )


def flash(args: argparse.Namespace) -> int:
    board = boards.load(args.board)
    port = pick_port(args.port)
    say(f"port {port}")
    check_port(port)
    vendor = parse_endpoint(args.vendor)
    provision: dict[str, object] = {"vendor": vendor, "claim_window_s": 120}
    ca = read_ca(args.vendor_ca)
    if ca:  # TLS to the vendor, verified against this CA (the board has no CA store of its own)
        vendor.update(tls=True, ca=ca)
    identity = read_client_identity(args.client_cert, args.client_key)
    if identity:  # the vendor authenticates the device by its own certificate (mutual TLS)
        if not ca:
            raise UserError(
                "--client-cert needs --vendor-ca: a client certificate is only sent over verified TLS"
            )
        vendor.update(identity)
    if args.vendor_receipt_key:  # the vendor's agent signs receipts: the device keeps readings until then
        vendor["receipts"] = read_receipt_key(args.vendor_receipt_key)
    wifi = read_wifi(args.wifi)
    if wifi:
        provision["wifi"] = wifi
    owner = owner_public_key(args)
    provision["owner"] = owner.hex()
    if args.release_key:  # the vendor's release keys: with its owner's approval, their releases install
        provision["release_keys"] = read_release_keys(args.release_key)
    if args.image:
        say(f"writing {args.image} with esptool (chip {board['chip']})")
        write_image(board, port, args.image)
    say("asking the board who it is")
    found = probe(port)
    check_chip(board, found)
    say(
        f"board answers: {found.machine or found.platform}, {found.free_bytes // 1024} KB free for the firmware"
    )
    with tempfile.TemporaryDirectory(prefix="firstparty-flash-") as work:
        work_dir = Path(work)
        say(f"compiling the firmware for {board['mpy_arch']} (mpy-cross)")
        build = compile_firmware(board["mpy_arch"], work_dir / "build")
        image = None
        rom_bytes = romfs_partition(port)
        if rom_bytes:
            image = build_romfs_image(build.path, work_dir / "firmware.romfs")
            size = image.stat().st_size
            if size > rom_bytes:
                say(
                    f"the ROMFS image ({size // 1024} KB) does not fit the board's ROMFS partition "
                    f"({rom_bytes // 1024} KB): emptying it (an older image there would shadow the "
                    "new code: main.py imports from /rom first) and copying the .mpy files instead"
                )
                (work_dir / "empty" / "empty").mkdir(parents=True)
                empty = build_romfs_image(work_dir / "empty", work_dir / "empty.romfs", folder="empty")
                mpremote(port, "romfs", "deploy", str(empty), timeout_s=ROMFS_DEPLOY_TIMEOUT_S)
                image = None
        else:
            say("no ROMFS partition on the board (mpremote romfs query): copying the .mpy files")
        needed = (build.path / "main.py").stat().st_size if image else build.mpy_bytes + build.data_bytes
        if needed + HEADROOM_BYTES > found.free_bytes:
            raise UserError(
                f"firmware too big: {needed // 1024} KB + {HEADROOM_BYTES // 1024} KB for data, "
                f"{found.free_bytes // 1024} KB free on the board; erase it (esptool erase_flash) and flash an image"
            )
        (work_dir / "board.json").write_text(json.dumps(board))
        (work_dir / "provision.json").write_text(json.dumps(provision))
        if image and rom_bytes:
            say(
                f"writing a ROMFS image of {image.stat().st_size // 1024} KB ({build.files} files) to the "
                f"board's {rom_bytes // 1024} KB ROMFS partition (mpremote romfs deploy): the code runs in place"
            )
            mpremote(port, "romfs", "deploy", str(image), timeout_s=ROMFS_DEPLOY_TIMEOUT_S)
            copy = ["fs", "cp", str(build.path / "main.py"), ":main.py"]
        else:
            say(f"copying {build.files} files, {needed // 1024} KB (mpremote)")
            copy = [
                "fs", "cp", "-r", str(build.path / "fp"), ":",
                "+", "fs", "cp", str(build.path / "main.py"), ":main.py",
            ]  # fmt: skip
        mpremote(
            port,
            *copy,
            "+", "fs", "cp", str(work_dir / "board.json"), ":board.json",
            "+", "fs", "cp", str(work_dir / "provision.json"), ":provision.json",
        )  # fmt: skip
    say(
        f"provisioned: vendor {args.vendor}, owner key {owner.hex()[:16]}..., Wi-Fi {wifi['ssid'] if wifi else 'none'}"
    )
    endpoint = agent_endpoint(args)
    say(
        "reading the device card" + (f" and its password for {endpoint[0]}:{endpoint[1]}" if endpoint else "")
    )
    card, password = read_card(port, endpoint)
    from host_agent import wire

    parsed = wire.parse_card(card)
    card_path = args.card_out or Path(f"{parsed.device_id}.card")
    card_path.write_bytes(card)
    say(f"device {parsed.device_id}, card in {card_path}")
    say("resetting")
    booted_id = wait_for_boot(port)
    if booted_id != parsed.device_id:
        raise UserError(
            f"the board booted as {booted_id}, not the {parsed.device_id} of its card; flash again"
        )
    say(f"firmware running as {booted_id}")
    try:
        say(register(args, card, booted_id, password))
    except UserError as error:  # the board is flashed and runs; only the agent's side is missing
        say(f"flashed, but not registered: {error}; then `firstparty devices accept {booted_id}`")
        return 1
    return 0


def agent_endpoint(args: argparse.Namespace) -> tuple[str, int] | None:
    """Where devices log in to the running agent's embedded broker (--config), or None."""
    if args.owner_key and not args.config:
        return None
    config = agent_config.resolve(args.config)
    if not (config.data_dir / RUNTIME_FILE).exists():
        return None
    endpoint = call_agent(config, "GET", "/status", timeout_s=10).get("broker_endpoint")
    if not endpoint:
        return None
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def register(args: argparse.Namespace, card: bytes, device_id: str, password: str | None = None) -> str:
    """Register the device with the owner's agent as claimed and enrol it with its broker; say what became of it."""
    if args.owner_key and not args.config:
        return (
            f"not registered with an agent (--owner-key without --config): `firstparty devices accept "
            f"{device_id}` once its card reaches yours"
        )
    config = agent_config.resolve(args.config)
    if not (config.data_dir / RUNTIME_FILE).exists():
        return (
            f"the agent is not running: {device_id} goes to its pending list when its card arrives; "
            f"accept it with `firstparty devices accept {device_id}`"
        )
    result = call_agent(config, "POST", "/devices", {"card_hex": card.hex()}, timeout_s=30)
    said = f"registered with the agent as claimed: {result['device_id']} {result['state']}"
    if password:
        enrolled = call_agent(
            config, "POST", "/devices/enrol", {"card_hex": card.hex(), "password": password}, timeout_s=30
        )
        said += f"; enrolled with its broker {enrolled['broker']} (the agent keeps a hash)"
    return said


def read_card(port: str, endpoint: tuple[str, int] | None = None) -> tuple[bytes, str | None]:
    """The device's card, and its password for the broker at `endpoint` when one is given."""
    script = _CARD + ("from fp import ids, storage" + _PASSWORD % endpoint if endpoint else "")
    out = mpremote(port, "exec", script)
    card, password = None, None
    for line in out.splitlines():
        if line.startswith("FP-CARD "):
            card = bytes.fromhex(line.split()[1])
        elif line.startswith("FP-PASSWORD "):
            password = line.split()[1]
    if card is None:
        raise UserError(f"the board did not give its card: {out.strip()[-100:]!r}")
    if endpoint and password is None:
        raise UserError("the board did not give its broker password: is its firmware this version?")
    return card, password
