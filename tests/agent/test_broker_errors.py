"""The embedded broker's start-up errors are one line saying what to change, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.helpers import venv_tool


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("firstparty"), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_taken_broker_port_is_one_line_naming_it(tmp_path):
    with socket.socket() as squatter:  # as the Debian mosquitto service holds 1883
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = tmp_path / "firstparty.toml"
        config.write_text(f'data_dir = "{tmp_path}"\n[broker]\nport = {port}\n[api]\nport = 0\n')
        result = serve(config)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: broker: port {port} on 127.0.0.1 is taken")
    assert "set broker.port" in result.stderr and "Traceback" not in result.stderr


def test_a_broker_address_that_is_not_this_machines_is_one_line(tmp_path):
    config = tmp_path / "firstparty.toml"
    config.write_text(
        f'data_dir = "{tmp_path}"\n[broker]\nhost = "198.51.100.7"\nport = 0\n[api]\nport = 0\n'
    )
    result = serve(config)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: broker: cannot listen on 198.51.100.7:")
    assert result.stderr.strip().count("\n") == 0
