"""Run the real firmware under the MicroPython unix port as the board `sim`, and control it.

The flash folder plays the board's filesystem: board.json, provision.json and everything the
firmware stores. Power cut = SIGKILL; network cut = the `net.down` marker the sim HAL reads;
button press = the `button.press` marker. The device's local HTTP API listens on 127.0.0.1 at
`http_port` (a free port unless one is given; 0 turns it off).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host_agent.bus.mosquitto import free_port, stop_process
from host_agent.paths import BOARDS, firmware_dir, tool_beside

if TYPE_CHECKING:
    from host_agent.service import Agent


def micropython_command() -> str:
    """Return the unix port's path: $FP_MICROPYTHON (e.g. a 32-bit build, docs/benchmarks.md), else
    the one installed beside this Python, else the one on PATH."""
    chosen = os.environ.get("FP_MICROPYTHON")
    if chosen:
        return chosen
    found = tool_beside("micropython")
    if not found:
        raise FileNotFoundError("the micropython command is missing: run `bash scripts/install`")
    return found


class SimDevice:
    """One virtual device: a flash folder and, while running, a micropython process."""

    def __init__(
        self,
        flash: Path,
        vendor: tuple[str, int],
        board: dict[str, Any] | None = None,  # board.json as the device reads it (tests hand in bad ones)
        owner_key: bytes | None = None,
        heapsize: str | None = None,
        code: Path | None = None,
        http_port: int | None = None,
        provision: dict[str, Any] | None = None,  # more of provision.json
    ):
        self.flash = Path(flash)
        self.flash.mkdir(parents=True, exist_ok=True)
        self.heapsize = heapsize
        # the firmware to run: the sources, or a compiled build (firstparty build) as boards run it
        self.code = Path(code) if code else firmware_dir()
        board = board or json.loads((BOARDS / "sim.json").read_text())
        (self.flash / "board.json").write_text(json.dumps(board))
        self.http_port = free_port() if http_port is None else http_port
        provisioning: dict[str, Any] = {
            "vendor": {"host": vendor[0], "port": vendor[1]},
            "claim_window_s": 120,
            "http_port": self.http_port,
        }
        if owner_key:
            provisioning["owner"] = owner_key.hex()
        provisioning.update(provision or {})  # more provisioning (safe-mode settings, ...)
        (self.flash / "provision.json").write_text(json.dumps(provisioning))
        self.process: subprocess.Popen[str] | None = None
        self.log: deque[str] = deque(maxlen=2000)
        self._reader: threading.Thread | None = None

    def start(self) -> SimDevice:
        command = [micropython_command()]
        if self.heapsize:
            command += ["-X", f"heapsize={self.heapsize}"]
        command.append(str(self.code / "main.py"))
        env = dict(os.environ, MICROPYPATH=f".frozen:{self.code}")
        self.process = subprocess.Popen(
            command, cwd=self.flash, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read_log, args=(self.process,), daemon=True)
        self._reader.start()
        return self

    def _read_log(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout
        for line in process.stdout:
            self.log.append(line.rstrip())

    def device_id(self, timeout_s: float = 10.0) -> str:
        """Wait for the boot line and return the device id it names."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.log):
                if line.startswith("fp: device "):
                    return line.split()[2]
            if self.process and self.process.poll() is not None:
                raise RuntimeError("sim device exited: " + "\n".join(self.log))
            time.sleep(0.05)
        raise TimeoutError(f"sim device did not boot within {timeout_s:.0f} s")

    def wait_exit(self, timeout_s: float = 15.0) -> int:
        """Wait for the process to end by itself (a reset: the unix port exits); return its code."""
        assert self.process
        return self.process.wait(timeout=timeout_s)

    def power_cut(self) -> None:
        """SIGKILL: as a power cut, nothing is flushed."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)

    def cut_network(self) -> None:
        (self.flash / "net.down").touch()

    def restore_network(self) -> None:
        (self.flash / "net.down").unlink(missing_ok=True)

    def press_button(self) -> None:
        (self.flash / "button.press").touch()

    def broker_password(self, host: str, port: int) -> str:
        """Its password for the broker at host:port, read as `firstparty flash` reads it over the serial
        line (computed from its seed, with the firmware's own fp.ids; the seed stays in its flash)."""
        from fp.ids import broker_password

        return broker_password((self.flash / "key.seed").read_bytes(), host, port)

    def card(self) -> bytes:
        """Its signed card, from its local HTTP API."""
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.http_port}/card", timeout=10).content

    def enrol(self, agent: Agent) -> None:
        """Enrol it with an agent's embedded broker, as `firstparty flash` does for the agent it names."""
        host, port = agent.devices_endpoint()
        assert agent.broker is not None, "enrol: the agent has no embedded broker"
        agent.broker.add_device(self.device_id(), self.broker_password(host, port))
