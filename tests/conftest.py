"""Fixtures shared by the whole suite."""

from __future__ import annotations

import sys

import pytest

from tests.helpers import FIRMWARE, run_micropython

# The host imports the very protocol code the firmware runs.
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))


def pytest_addoption(parser):
    """Options of tests/hil (a real board instead of the virtual one)."""
    from tests.hil.options import add_options

    add_options(parser)


@pytest.fixture(scope="session")
def micropython():
    """Callable that runs a script under the real MicroPython unix port and returns its stdout."""
    return run_micropython


@pytest.fixture
def mosquitto(tmp_path):
    """A real mosquitto on a free loopback port, stopped after the test."""
    from host_agent.mosquitto import Mosquitto

    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()
