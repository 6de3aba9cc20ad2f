"""Run a real PostgreSQL on a free loopback port in a folder of its own: the tests' and benchmarks'.

PostgreSQL refuses to run as root, so as root the cluster belongs to an unprivileged user
(`nobody`, or FP_POSTGRES_USER) and its commands run through runuser. Its folder is made under
/tmp (the user must be able to reach it), and removed by stop().
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from host_agent.bus.mosquitto import free_port

__all__ = ["Postgres", "postgres_bin"]

DATABASE = "firstparty"


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, or where Debian puts it (/usr/lib/postgresql/N/bin)."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise FileNotFoundError(f"{name} not found: run `bash scripts/install` (Debian package postgresql)")
    return found


class Postgres:
    """One PostgreSQL cluster on 127.0.0.1:port that tests can stop and start again (same port)."""

    def __init__(
        self,
        port: int | None = None,
        user: str | None = None,
        fsync: bool = False,
        preload: tuple[str, ...] = (),
    ):
        self.port = port or free_port()
        self.run_as = (user or os.environ.get("FP_POSTGRES_USER", "nobody")) if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="fp-postgres-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        # fsync off in tests only: a power cut is not what they test; a killed process is
        self.fsync = fsync
        self.preload = preload  # server libraries loaded at start (the benchmark's pg_stat_statements)
        if self.run_as is not None:
            account = pwd.getpwnam(self.run_as)
            os.chmod(self.dir, 0o700)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self._run(
            [postgres_bin("initdb"), "-D", str(self.data), "-U", "firstparty", "--auth=trust", "-E", "UTF8"]
        )
        self.started = False

    def _run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.dir)
        if check and result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}")
        return result

    @property
    def url(self) -> str:
        return f"postgresql://firstparty@127.0.0.1:{self.port}/{DATABASE}"

    def start(self, timeout_s: float = 30.0) -> Postgres:
        """Start the server, wait until it accepts connections, and make the database once."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync={'on' if self.fsync else 'off'}"
            " -c max_connections=60 -c shared_buffers=64MB"
        )
        if self.preload:
            options += f" -c shared_preload_libraries={','.join(self.preload)}"
        self._run(
            [
                postgres_bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout_s)),
                "start",
            ]
        )
        self.started = True
        if not self._run(
            [
                postgres_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "firstparty",
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname='{DATABASE}'",
            ]
        ).stdout.strip():
            self._run(
                [
                    postgres_bin("createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "firstparty",
                    DATABASE,
                ]
            )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: clients cut off, every commit kept; immediate: as a crash)."""
        if self.started:
            self._run([postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)
            self.started = False

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def reset(self) -> None:
        """Drop and make the database again: a fresh store for the next test."""
        for name in ("dropdb", "createdb"):
            extra = ["--force"] if name == "dropdb" else []
            self._run(
                [
                    postgres_bin(name),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "firstparty",
                    *extra,
                    DATABASE,
                ]
            )

    def create_database(self, number: int) -> str:
        """Make (again, empty) the database firstparty_<number>; its URL."""
        name = f"{DATABASE}_{number}"
        for program, extra in (("dropdb", ["--force", "--if-exists"]), ("createdb", [])):
            self._run(
                [
                    postgres_bin(program),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "firstparty",
                    *extra,
                    name,
                ]
            )
        return f"postgresql://firstparty@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
