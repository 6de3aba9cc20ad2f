"""Fixtures shared by the whole suite."""

from __future__ import annotations

import fcntl
import sys
from pathlib import Path

import pytest

from tests.helpers import FIRMWARE, run_micropython

# The host imports the very protocol code the firmware runs.
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))


# Test tiers (pyproject.toml registers the markers). A test's tier follows from where it lives, so a new
# test file needs no marker: everything not listed here starts real processes (mosquitto, an agent, the
# firmware as a device) and is `integration`, and so is any test, wherever it lives, that asks for a
# fixture starting one. `bash scripts/test --fast` runs the `unit` tier.
UNIT_FILES = {
    "tests/protocol",
    "tests/firmware/test_settings.py",
    "tests/firmware/test_ringbuf.py",
    "tests/firmware/test_layout.py",
    "tests/test_boards.py",
    "tests/test_project.py",
    "tests/agent/test_accept_core.py",
    "tests/test_layers.py",
    "tests/agent/test_outbox_sinks.py",
    "tests/agent/test_config.py",
}
DOCS_FILES = {"tests/test_docs_commands.py", "tests/test_docs_reference.py"}
PROCESS_FIXTURES = {
    "mosquitto",
    "sim_devices",
    "start_agent",
    "publisher",
    "virtual_board",
    "postgres_server",
    "pg_url",
}


def _tier(relative_path: str, fixture_names=()) -> str:
    if relative_path.startswith("tests/hil/"):
        return "hil"
    if PROCESS_FIXTURES.intersection(fixture_names):
        return "integration"
    for prefix, tier in ((UNIT_FILES, "unit"), (DOCS_FILES, "docs")):
        if any(relative_path == known or relative_path.startswith(known + "/") for known in prefix):
            return tier
    return "integration"


def pytest_collection_modifyitems(config, items):
    """Give each test the marker of its tier (unit, integration, docs, hil)."""
    root = Path(str(config.rootpath))
    for item in items:
        relative = Path(str(item.path)).relative_to(root).as_posix()
        item.add_marker(getattr(pytest.mark, _tier(relative, getattr(item, "fixturenames", ()))))


def pytest_addoption(parser):
    """Options of tests/hil (a real board instead of the virtual one)."""
    from tests.hil.options import add_options

    add_options(parser)


@pytest.fixture(autouse=True)
def _alone_if_exclusive(request, tmp_path_factory):
    """Run a test marked `exclusive` with no other test beside it, under pytest-xdist's workers too.

    Every test holds a shared lock on one file for its run; an exclusive test holds it alone. The
    workers' base folders share a parent, where the lock files live. A second lock (the turnstile) is
    held only while taking the first, so a waiting exclusive test is not starved by shared ones."""
    root = tmp_path_factory.getbasetemp().parent
    exclusive = request.node.get_closest_marker("exclusive") is not None
    with open(root / "fp-tests.turnstile", "a") as turnstile, open(root / "fp-tests.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield  # the lock is released when the file closes


@pytest.fixture(scope="session")
def micropython():
    """Callable that runs a script under the real MicroPython unix port and returns its stdout."""
    return run_micropython


@pytest.fixture
def mosquitto(tmp_path):
    """A real mosquitto on a free loopback port, stopped after the test."""
    from host_agent.bus.mosquitto import Mosquitto

    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()
