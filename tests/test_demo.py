"""The main job: `firstparty demo` plays the mission's story on the real firmware, and what it tells
the user to do next (verify a reading as a third party) works."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from host_agent.ingest.verifier import Verifier
from tests.helpers import REPO


def _firstparty() -> list[str]:
    script = Path(sys.executable).with_name("firstparty")
    return [str(script)] if script.exists() else [sys.executable, "-m", "host_agent.cli.main"]


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
    api_line = re.search(r"your agent's API: (http://127\.0\.0\.1:\d+)/docs", out)
    assert api_line
    # the console: the same address as the API, and a one-time sign-in link to it
    console = re.search(
        r"your console: (\S+)/ - sign in once with (\S+)/console/link\?code=(fpl_[\w-]+)\n", out
    )
    assert console and console.group(1) == console.group(2) == api_line.group(1), out

    # the co-op got the garage's temp and hum, the original signed bytes, verifiable with its card
    home = data / "home"
    with sqlite3.connect(home / "firstparty.db") as db:
        cards = {
            device_id: bytes(card) for device_id, card in db.execute("SELECT device_id, card FROM devices")
        }
    verifier = Verifier()
    for card in cards.values():
        verifier.learn_card(card)
    lines = (data / "coop" / "garage.jsonl").read_text().splitlines()
    assert lines
    for line in lines:
        forward = json.loads(line)
        message = verifier.check(
            f"fp/v1/{forward['device_id']}/reading", base64.b64decode(forward["message"])
        )
        assert {name for name, _, _ in message.body} <= {"temp", "hum"}

    # the co-op's check the summary shows: card + the owner's signed grant + what it received
    coop = re.search(r"firstparty (verify --card \S+ --grant \S+ --owner [0-9a-f]{64} \S+)", out)
    assert coop, out
    checked = subprocess.run(
        [*_firstparty(), *coop.group(1).split()], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(lines)} verified, 0 refused" in checked.stdout

    # first-party terms: the vendor countersigned the baseline, the co-op the owner's terms, and the
    # data broker's counter-offer was refused, so it got nothing
    assert re.search(
        r"proffered service-only@1 .* for the kitchen to the vendor's agent: accepted, .* both records identical",
        out,
    )
    assert "the co-op countersigns with its own key" in out
    assert "your agent refused the counter-offer" in out
    assert "readings the data broker got: 0" in out
    assert not (data / "broker" / "garage.jsonl").exists()
    agreed = re.search(r"firstparty (verify --card \S+ --agreement \S+ \S+)", out)
    assert agreed, out
    checked = subprocess.run(
        [*_firstparty(), *agreed.group(1).split()], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(lines)} verified, 0 refused" in checked.stdout

    # the link's code is the home agent's, for a live token, still unused (the demo never opens it)
    with sqlite3.connect(home / "firstparty.db") as db:
        link = db.execute(
            "SELECT t.revoked, l.expires_s > unixepoch() FROM console_links l JOIN tokens t ON t.token_hash=l.token_hash"
            " WHERE l.code_hash=?",
            (hashlib.sha256(console.group(3).encode()).hexdigest(),),
        ).fetchall()
    assert link == [(None, 1)], link  # not revoked, not expired

    # the owner's agent left by the demo answers the CLI the summary shows
    config = str(home / "firstparty.toml")
    listed = subprocess.run(
        [*_firstparty(), "devices", "list", "--config", config], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0 and listed.stdout.count("accepted") == 2, listed.stdout + listed.stderr
    assert "kitchen" in listed.stdout and "garage" in listed.stdout
    audit = subprocess.run(
        [*_firstparty(), "audit", "verify", "--config", config], capture_output=True, text=True, timeout=60
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr

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
