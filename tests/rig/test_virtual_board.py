"""mpremote drives the virtual board exactly as it drives a real one: every verb a user needs."""

from __future__ import annotations

import os
import pty
import select
import time

import pytest

from tests.rig.conftest import mpremote_command

FOREVER_MAIN = "import time\nprint('main running')\nwhile True:\n    time.sleep(0.05)\n"


class _Terminal:
    """What a pty's other end has printed so far, read as it comes."""

    def __init__(self, fd: int):
        self.fd = fd
        self.seen = b""

    def read_until(self, wanted: bytes, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        while wanted not in self.seen and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.fd, 1024)
                except OSError:
                    break
        return self.seen


def _ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_exec_runs_on_the_board_with_its_flash_as_root(virtual_board, mpremote):
    (virtual_board.flash / "marker.txt").write_text("x")
    out = _ok(mpremote("exec", "import os; print(sorted(os.listdir('/')), os.getcwd())"))
    assert "['marker.txt'] /" in out


def test_fs_cp_ls_rm_land_in_the_flash_folder(virtual_board, mpremote, tmp_path):
    source = tmp_path / "hello.py"
    source.write_text("print('hello from flash')\n")
    _ok(mpremote("fs", "cp", str(source), ":hello.py"))
    assert (virtual_board.flash / "hello.py").read_text() == source.read_text()
    _ok(mpremote("fs", "mkdir", ":lib"))
    _ok(mpremote("fs", "cp", str(source), ":/lib/greet.py"))
    assert (virtual_board.flash / "lib" / "greet.py").exists()
    listing = _ok(mpremote("fs", "ls", ":"))
    assert "hello.py" in listing and "lib/" in listing
    # /lib is on the board's sys.path, as on an ESP32
    assert "hello from flash" in _ok(mpremote("exec", "import greet"))
    _ok(mpremote("fs", "rm", ":hello.py"))
    assert not (virtual_board.flash / "hello.py").exists()
    back = tmp_path / "back.py"
    _ok(mpremote("fs", "cp", ":lib/greet.py", str(back)))
    assert back.read_text() == source.read_text()


def test_run_and_mount_use_host_files(mpremote, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("print('ran', 6 * 7)\n")
    assert "ran 42" in _ok(mpremote("run", str(script)))
    (tmp_path / "mounted.py").write_text("print('imported from the host')\n")
    out = _ok(mpremote("mount", str(tmp_path), "exec", "import mounted, os; print(os.getcwd())"))
    assert "imported from the host" in out and "/remote" in out


BOOT_AND_MAIN = {
    "boot.py": "open('boot.log', 'a').write('b')\n",
    "main.py": "open('boot.log', 'a').write('m')\n",
}


@pytest.mark.parametrize("virtual_board", [BOOT_AND_MAIN], indirect=True, ids=["boot-and-main"])
def test_soft_reset_restarts_the_interpreter_and_runs_boot_then_main(virtual_board, mpremote):
    log = virtual_board.flash / "boot.log"
    deadline = time.monotonic() + 10
    while not (log.exists() and log.read_text().endswith("m")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text() == "bm"  # power on ran boot then main
    log.unlink()
    # the soft reset from mpremote's raw REPL runs boot only, as a board does
    starts = virtual_board.starts
    _ok(mpremote("soft-reset"))
    assert virtual_board.starts > starts
    assert log.read_text() == "b"
    _ok(mpremote("exec", "import machine; machine.soft_reset()"))
    assert "still here" in _ok(mpremote("exec", "print('still here')"))


def test_what_is_sent_while_the_interpreter_restarts_reaches_the_new_one(virtual_board):
    """mpremote's next Ctrl-A can reach the board while the old interpreter is still exiting: the
    new one must get it, as a board's UART keeps what it received across a soft reset."""
    fd = os.open(virtual_board.port, os.O_RDWR | os.O_NOCTTY)
    terminal = _Terminal(fd)
    try:
        os.write(fd, b"\r")
        assert b">>> " in terminal.read_until(b">>> ", 10)
        starts = virtual_board.starts
        # the REPL reads its input a byte at a time: the Ctrl-A after the line is still unread
        # when the line resets the board
        os.write(fd, b"import machine; machine.soft_reset()\r\x01")
        assert b"MPY: soft reboot" in terminal.read_until(b"MPY: soft reboot", 10)
        banner = b"raw REPL; CTRL-B to exit"
        assert banner in terminal.read_until(banner, 10), terminal.seen
        assert virtual_board.starts == starts + 1
    finally:
        os.close(fd)


def test_ctrl_c_interrupts_a_running_main_like_a_board(virtual_board, mpremote):
    (virtual_board.flash / "main.py").write_text(FOREVER_MAIN)
    virtual_board.power_cycle()
    time.sleep(0.5)
    assert "reached the REPL" in _ok(mpremote("exec", "print('reached the REPL')"))


def test_repl_is_interactive(virtual_board):
    pid, fd = pty.fork()
    if pid == 0:  # the child: mpremote's repl on a terminal, as a user runs it
        os.execv(mpremote_command(), [mpremote_command(), "connect", virtual_board.port, "repl"])
    terminal = _Terminal(fd)
    try:
        assert b"Connected" in terminal.read_until(b"Connected", 10)
        os.write(fd, b"\r")
        assert b">>> " in terminal.read_until(b">>> ", 5)
        os.write(fd, b"print(6 * 7)\r")
        assert b"42" in terminal.read_until(b"42", 5)
        os.write(fd, b"\x1d")  # Ctrl-] leaves the repl
    finally:
        exited = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not exited:
            exited = os.waitpid(pid, os.WNOHANG) != (0, 0)
            time.sleep(0.05)
        if not exited:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


def test_power_cycle_kills_the_interpreter_and_boots_again(virtual_board, mpremote):
    (virtual_board.flash / "main.py").write_text("open('power.log', 'a').write('m')\n")
    virtual_board.power_cycle()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (virtual_board.flash / "power.log").exists():
        time.sleep(0.05)
    assert (virtual_board.flash / "power.log").read_text() == "m"
    assert _ok(mpremote("exec", "print(1 + 1)")).strip() == "2"


def test_network_cut_is_the_marker_the_sim_hardware_reads(virtual_board, mpremote):
    virtual_board.cut_network()
    assert "net.down" in _ok(mpremote("exec", "import os; print(os.listdir())"))
    virtual_board.restore_network()
    assert "net.down" not in _ok(mpremote("exec", "import os; print(os.listdir())"))
