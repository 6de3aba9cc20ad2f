"""Command-line options of the hardware-in-the-loop suite (registered from tests/conftest.py, since
pytest reads pytest_addoption only from initial conftests and plugins)."""

from __future__ import annotations


def add_options(parser) -> None:
    group = parser.getgroup("hil", "hardware in the loop (default: the virtual board)")
    group.addoption("--board", default=None, help="run tests/hil on a real board of this name (boards/)")
    group.addoption(
        "--port", default=None, help="its serial port, e.g. /dev/ttyUSB0 (default: the only USB one)"
    )
    group.addoption("--wifi", default=None, help='JSON file {"ssid", "password"} of the rig\'s access point')
    group.addoption(
        "--rig-host",
        default="127.0.0.1",
        help="this machine's address as the board reaches it (the rig's brokers listen there)",
    )
