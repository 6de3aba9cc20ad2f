"""The `exclusive` marker keeps a test alone while pytest-xdist's workers run the others."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import REPO

CONFTEST = """
from tests.conftest import _alone_if_exclusive  # noqa: F401  (the fixture under test)

def pytest_configure(config):
    config.addinivalue_line("markers", "exclusive: runs alone")
"""
TESTS = """
import os, time, pytest

def _run(name, seconds):
    started = time.monotonic()
    time.sleep(seconds)
    with open(os.environ["FP_INTERVALS"], "a") as out:
        out.write(f"{name} {started} {time.monotonic()}\\n")

MARK = pytest.mark.exclusive if os.environ["FP_MARK"] == "1" else (lambda test: test)

@MARK
def test_alone():
    _run("alone", 1.0)

@pytest.mark.parametrize("n", range(6))
def test_beside(n):
    _run(f"beside{n}", 0.4)
"""


def _intervals(tmp_path, mark: bool) -> tuple[tuple[float, float], list[tuple[float, float]]]:
    project = tmp_path / ("marked" if mark else "unmarked")
    project.mkdir()
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_pair.py").write_text(textwrap.dedent(TESTS))
    out = project / "intervals.txt"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", str(project)],
        cwd=project,
        env={
            "PYTHONPATH": str(REPO),
            "FP_INTERVALS": str(out),
            "FP_MARK": "1" if mark else "0",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in out.read_text().splitlines()]
    alone = next((float(a), float(b)) for name, a, b in rows if name == "alone")
    return alone, [(float(a), float(b)) for name, a, b in rows if name != "alone"]


def _overlapping(alone, others) -> int:
    return sum(1 for start, end in others if start < alone[1] and end > alone[0])


def test_an_exclusive_test_runs_with_no_other_beside_it_on_two_workers(tmp_path):
    alone, others = _intervals(tmp_path, mark=True)
    assert len(others) == 6 and _overlapping(alone, others) == 0
    # the same tests unmarked do run side by side, so the check above can see an overlap
    alone, others = _intervals(tmp_path, mark=False)
    assert _overlapping(alone, others) > 0
