"""The main job: `firstparty demo` plays the mission's story on the real firmware, and what it tells
the user to do next (verify a reading as a third party) works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def _firstparty() -> list[str]:
    script = Path(sys.executable).with_name("firstparty")
    return [str(script)] if script.exists() else [sys.executable, "-m", "host_agent.cli"]


def test_demo_plays_the_story_and_its_next_step_verifies(tmp_path):
    data = tmp_path / "demo"
    result = subprocess.run(
        [*_firstparty(), "demo", "--plain", "--duration", "12", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    first = re.search(r"first verified readings from all three after ([0-9.]+) s", out)
    assert first and float(first.group(1)) <= 10.0
    assert "acknowledged claim: applied" in out
    assert "vendor readings from the kitchen since the reroute: 0 (it stopped)" in out
    assert "acknowledged set-destinations: applied" in out
    assert re.search(r"vendor refused .*: bad-signature", out)
    assert re.search(r"vendor refused .*: wrong-topic", out)
    assert "Traceback" not in out + result.stderr

    # the next step the demo prints: verify a reading holding nothing but the card
    command = re.search(r"firstparty verify --card (\S+) (\S+)", out)
    assert command
    card, reading = command.group(1), command.group(2)
    verified = subprocess.run(
        [*_firstparty(), "verify", "--card", card, reading], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0 and ": verified reading from " in verified.stdout
    tampered = tmp_path / "tampered.reading"
    raw = bytearray(Path(reading).read_bytes())
    raw[-10] ^= 0x01  # inside the signature
    tampered.write_bytes(bytes(raw))
    refused = subprocess.run(
        [*_firstparty(), "verify", "--card", card, str(tampered)], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "REFUSED bad-signature" in refused.stdout


def test_verify_names_a_missing_file_in_one_line(tmp_path):
    result = subprocess.run(
        [*_firstparty(), "verify", "--card", str(tmp_path / "none.card"), "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: cannot read")
