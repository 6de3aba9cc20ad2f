"""Run a virtual ESP32 on a pseudo-terminal: `mpremote connect <pty>` drives it like a real board.

The MicroPython unix port runs with a folder as its flash: the bridge remounts the unix port's
VFS root onto that folder, so `/main.py`, `:lib/x.mpy` and every `os` call mpremote makes land
there, and `sys.path` is a board's (`''`, `.frozen`, `/lib`). After every (re)start it runs
`boot.py` then `main.py` from the flash root, as a board does, then the REPL.

Two ptys: the one the user connects to (raw, held open by the bridge so a disconnect is not a
hang-up) and one per interpreter run. The interpreter's pty is raw but keeps ISIG, so a Ctrl-C
from mpremote interrupts a running `main.py` exactly as on a board (the unix port turns ISIG
off itself while its REPL reads a line). The unix port exits where a board soft-resets (Ctrl-D,
`machine.soft_reset()`); the bridge prints `MPY: soft reboot` and starts it again, staying in
the raw REPL (and skipping `main.py`) when the reset came from there, as a board does. What the
user sent that the old interpreter never read (mpremote's next Ctrl-A, sent while the old one was
exiting) is handed to the new one, as a board's UART keeps its receive buffer across a soft reset:
the bridge holds the interpreter's end of the pty open too, so those bytes wait there.

Network cut = the `net.down` marker file the sim hardware layer reads (fp.hal_sim); power
cycle = SIGKILL and a fresh start.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import signal
import subprocess
import termios
import threading
import time
import tty
from collections import deque
from pathlib import Path
from types import FrameType

from host_agent.errors import UserError
from host_agent.rig.simdevice import micropython_command

NET_DOWN_FILE = "net.down"  # fp.hal_sim._NET_DOWN_FILE
RAW_REPL_BANNER = b"raw REPL; CTRL-B to exit\r\n"
WRITE_WAIT_S = 2.0
OUTPUT_LINES = 2000
CTRL_A, CTRL_B = 0x01, 0x02
# what the launcher prints when the firmware resets the board (SystemExit): with -i the unix port
# would go on to its REPL, so the bridge sends the Ctrl-D that ends it, and restarts it as a reset
RESET_LINE = "fp: board reset"

# Runs in the interpreter before its REPL: remount the root on the flash folder, then boot.py
# and main.py (main.py only outside the raw REPL). An exception prints as a board prints it.
_LAUNCHER = """
import os, sys, vfs
vfs.umount('/')
vfs.mount(vfs.VfsPosix({flash!r}), '/')
os.chdir('/')
del vfs
def _fp_run(name):
    try:
        os.stat(name)
    except OSError:
        return
    try:
        exec(open(name).read(), {{'__name__': '__main__'}})
    except SystemExit:  # the firmware resets the board (fp.hal_sim.reset): the bridge ends the REPL
        print({reset!r})
    except BaseException as error:
        sys.print_exception(error)
_fp_run('boot.py')
if not {raw}:
    _fp_run('main.py')
del _fp_run
"""


def _set_raw(fd: int, keep_isig: bool = False) -> None:
    tty.setraw(fd)
    if keep_isig:
        attributes = termios.tcgetattr(fd)
        attributes[3] |= termios.ISIG
        termios.tcsetattr(fd, termios.TCSANOW, attributes)


def _take_controlling_tty() -> None:
    # the interpreter's pty must be its controlling terminal for Ctrl-C to become SIGINT
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class VirtualBoard:
    """A virtual ESP32: the unix port in `flash`, attached to the pty at `self.port`."""

    def __init__(self, flash: Path, heapsize: str | None = None):
        self.flash = Path(flash).resolve()
        self.flash.mkdir(parents=True, exist_ok=True)
        self.heapsize = heapsize
        self.port = ""
        self.starts = 0  # interpreter runs so far: 1 after start(), +1 per soft reset or power cycle
        self._user_master = self._user_slave = -1
        self._child_master = self._child_slave = -1
        self._process: subprocess.Popen[bytes] | None = None
        self._is_raw = False
        self._is_stalled = False
        self.output: deque[str] = deque(maxlen=OUTPUT_LINES)  # what the board printed, newest last
        self._swallow_until_raw_banner = False
        self._pending = b""
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> VirtualBoard:
        """Open the user's pty, start the interpreter and the bridge thread; return self."""
        self._user_master, self._user_slave = os.openpty()
        _set_raw(self._user_master)
        _set_raw(self._user_slave)
        os.set_blocking(self._user_master, False)
        self.port = os.ttyname(self._user_slave)
        self._spawn(raw=False)
        self._thread = threading.Thread(target=self._bridge, name="virtual-board", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the interpreter and close both ptys."""
        self._stopping.set()
        self._kill()
        if self._thread:
            self._thread.join(timeout=5)
        for fd in (self._child_master, self._child_slave, self._user_master, self._user_slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child_master = self._child_slave = self._user_master = self._user_slave = -1

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the physical world ----------------------------------------------------------------------

    def power_cycle(self) -> None:
        """Cut the power (SIGKILL, nothing flushed) and power on again: boot.py, main.py, REPL."""
        with self._lock:
            self._kill()
            self._write_user(b"\r\n")
            self._spawn(raw=False)

    def cut_network(self) -> None:
        (self.flash / NET_DOWN_FILE).touch()

    def restore_network(self) -> None:
        (self.flash / NET_DOWN_FILE).unlink(missing_ok=True)

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- internals -------------------------------------------------------------------------------

    def _spawn(self, raw: bool, unread: bytes = b"") -> None:
        """Start the interpreter on a new pty; `unread`: input the previous one never read."""
        master, slave = os.openpty()
        _set_raw(slave, keep_isig=True)
        command = [micropython_command()]
        if self.heapsize:
            command += ["-X", f"heapsize={self.heapsize}"]
        command += ["-i", "-c", _LAUNCHER.format(flash=str(self.flash), raw=raw, reset=RESET_LINE)]
        env = dict(os.environ, MICROPYPATH=":.frozen:/lib")
        self._process = subprocess.Popen(
            command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=self.flash,
            env=env,
            start_new_session=True,
            preexec_fn=_take_controlling_tty,
        )
        for fd in (self._child_master, self._child_slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        # the slave stays open here too: input the interpreter has not read outlives its exit
        self._child_master, self._child_slave = master, slave
        self._is_raw = raw
        self._swallow_until_raw_banner = raw
        self._pending = b""
        if raw:
            os.write(master, bytes([CTRL_A]))
        if unread:
            os.write(master, unread)
        self.starts += 1

    def _unread_input(self) -> bytes:
        """What was sent to the interpreter that has exited and it never read (its pty's queue)."""
        if self._child_slave < 0:
            return b""
        os.set_blocking(self._child_slave, False)
        unread = b""
        with contextlib.suppress(OSError):  # BlockingIOError: the queue is empty
            while chunk := os.read(self._child_slave, 4096):
                unread += chunk
        return unread

    def _kill(self) -> None:
        process = self._process
        if process and process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    def _write_user(self, data: bytes) -> None:
        # Nobody reading (no mpremote attached) must not stall the firmware on print(): once a
        # write has waited WRITE_WAIT_S in vain, output is dropped, as a UART with nothing on
        # its other end drops it, until the reader drains the pty again.
        self.output.extend(data.decode(errors="replace").splitlines())
        view = memoryview(data)
        while view:
            wait_s = 0 if self._is_stalled else WRITE_WAIT_S
            try:
                writable = select.select([], [self._user_master], [], wait_s)[1]
                if not writable:
                    self._is_stalled = True
                    return
                self._is_stalled = False
                view = view[os.write(self._user_master, view) :]
            except BlockingIOError:
                continue
            except (OSError, ValueError):
                return

    def _from_child(self, data: bytes) -> None:
        if self._swallow_until_raw_banner:
            # a raw-mode restart: the board shows nothing but the raw REPL prompt
            self._pending += data
            index = self._pending.find(RAW_REPL_BANNER)
            if index < 0:
                self._pending = self._pending[-len(RAW_REPL_BANNER) :]
                return
            data = self._pending[index:]
            self._swallow_until_raw_banner = False
        if RAW_REPL_BANNER in data:
            self._is_raw = True
        if RESET_LINE.encode() in data and not self._is_raw:
            with contextlib.suppress(OSError):
                os.write(self._child_master, b"\x04")
        self._write_user(data)

    def _to_child(self, data: bytes) -> None:
        if CTRL_B in data:
            self._is_raw = False
        with contextlib.suppress(OSError):
            os.write(self._child_master, data)

    def _on_exit(self) -> None:
        # the unix port exits where a board soft-resets
        with self._lock:
            if self._stopping.is_set():
                return
            self._write_user(b"MPY: soft reboot\r\n")
            self._spawn(raw=self._is_raw, unread=self._unread_input())

    def _bridge(self) -> None:
        while not self._stopping.is_set():
            child = self._child_master
            try:
                readable, _, _ = select.select([self._user_master, child], [], [], 0.1)
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            with self._lock:
                if child != self._child_master:
                    continue  # restarted (power cycle) while we waited
                if self._user_master in readable:
                    with contextlib.suppress(OSError):
                        self._to_child(os.read(self._user_master, 4096))
                if child in readable:
                    try:
                        data = os.read(child, 4096)
                    except OSError:
                        data = b""
                    if data:
                        self._from_child(data)
                        continue
                    self._reap_and_restart()
                elif self._process and self._process.poll() is not None:
                    self._drain_and_restart(child)

    def _drain_and_restart(self, child: int) -> None:
        with contextlib.suppress(OSError):
            while select.select([child], [], [], 0)[0]:
                data = os.read(child, 4096)
                if not data:
                    break
                self._from_child(data)
        self._reap_and_restart()

    def _reap_and_restart(self) -> None:
        if self._process:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=2)
        self._on_exit()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flash", required=True, type=Path, help="folder that plays the board's flash")
    parser.add_argument("--heapsize", help="MicroPython heap, e.g. 256K (default: the unix port's)")


def run(args: argparse.Namespace) -> int:
    """Start a virtual ESP32 and print its pty; stop with Ctrl-C."""
    if args.flash.exists() and not args.flash.is_dir():
        raise UserError(f"--flash {args.flash} is a file; name a folder to play the board's flash")
    try:
        board = VirtualBoard(args.flash, heapsize=args.heapsize).start()
    except FileNotFoundError as error:
        raise UserError(str(error)) from error
    print(board.port, flush=True)
    print(
        f"virtual board: flash {board.flash}; connect with `mpremote connect {board.port}`; Ctrl-C stops",
        flush=True,
    )
    stopped = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0
