"""Run a real mosquitto on a free loopback port: the demo's brokers, and the tests' and benchmarks'."""

from __future__ import annotations

import ctypes
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# looked up here, in the parent: the child of a threaded process must not load libraries (locks)
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGTERM when its parent dies, even by SIGKILL.

    SIGTERM, not SIGKILL: mosquitto then saves its persistence file (the agent's queued messages)
    on the way out. Linux only; elsewhere the next start reclaims the orphan (host_agent.bus.broker).
    """
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 5.0) -> None:
    """SIGTERM (so it saves what it must), then SIGKILL if it has not ended within `timeout_s`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mosquitto:
    """A mosquitto process on 127.0.0.1 that tests can stop and start again (same port)."""

    def __init__(
        self, workdir: Path, port: int | None = None, extra_config: str = "", host: str = "127.0.0.1"
    ):
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise FileNotFoundError(
                "mosquitto is not installed: run `bash scripts/install` (Debian package mosquitto)"
            )
        self.binary = binary
        self.host = host
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        # as root, mosquitto would drop to the `mosquitto` user, which cannot write (persistence)
        # or even read the private folders this broker lives in
        run_as = f"user {getpass.getuser()}\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            run_as + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 10000\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + extra_config
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        """The command line this broker runs as (also how a stale one of ours is recognised)."""
        return [self.binary, "-c", str(self.config)]

    @property
    def probe_host(self) -> str:
        """Where a client on this machine reaches the listener (a wildcard address is reached on loopback)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    def start(self, timeout_s: float = 5.0) -> Mosquitto:
        """Start the broker and wait until it accepts connections."""
        # the death signal follows the thread that forks: callers start it from a thread that
        # lives as long as they do (the agent: its event loop's executor, shut down after stop())
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=die_with_parent
        )
        process = self.process
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                why = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"mosquitto exited: {why}")
            try:
                with socket.create_connection((self.probe_host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Stop the broker (an outage, as far as clients can tell)."""
        if self.process:
            stop_process(self.process)
        self.process = None
