"""A full disk under the agent's data folder, with a webhook route: backoff, no resend, true health.

The data folder is a real 3 MB tmpfs (mounting one needs root: skipped, saying so, without it),
filled with a file until the kernel says ENOSPC, then freed.

SQLite only: what fills here is the folder of the agent's SQLite file. A PostgreSQL store lives in
the server's own folder, and a server whose disk fills fails its writes with SQLSTATE 53100 (read
as disk-full below, the health reason this test checks) or, out of room for its WAL, stops: for
the agent both are a store that cannot commit, the case tests/agent/test_postgres.py plays by
stopping the server under load (nothing acknowledged, nothing lost).
"""

from __future__ import annotations

import errno
import subprocess
import time
from pathlib import Path

import pytest

from host_agent.api import tokens
from tests.agent.conftest import add_own_webhook, api, wait_for


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs, unmounted after the test."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip() or mounted.returncode}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the disk is full (ENOSPC); return it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as file:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    file.write(b"\0" * chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    return filler


def test_full_disk_backs_off_resends_nothing_and_health_says_disk_full(
    small_disk, start_agent, device, publisher, webhook
):  # small_disk first: it is unmounted after the agent stops
    agent = start_agent(auto_accept=True, data_dir=str(small_disk / "agent"))
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    reader = api(agent, tokens.issue(agent.store, "reader", "read"))
    add_own_webhook(admin, webhook.url)
    webhook.status = 503  # forwards pile up in the outbox while the disk still has room
    publisher.publish(device.topic("card"), device.card(), retain=True)
    sent = [device.reading() for _ in range(300)]
    for data in sent:  # not waited for one by one: a few commits, as under load
        publisher.client.publish(device.topic("reading"), data, qos=1)
    wait_for(lambda: agent.store.count_readings() == 300, 20, "300 readings stored")
    wait_for(lambda: webhook.posts > 0, 10, "the webhook refusing")
    agent.store.query("PRAGMA wal_checkpoint(TRUNCATE)")  # no room left in the log file either
    filler = fill(small_disk)
    posts_at_switch, taken_at_switch = webhook.posts, len(webhook.bodies)
    webhook.status = 200
    try:
        wait_for(lambda: agent.status()["store"] == "disk-full", 20, "the agent to report the full disk")
        health = admin.get("/healthz")
        assert health.status_code == 503 and health.json()["store"] == "disk-full"
        assert reader.get("/status").json()["store"] == "disk-full"
        assert 'firstparty_store_state{state="disk-full"} 1.0' in reader.get("/metrics").text
        # readings the broker acknowledged while full: not stored yet, not lost either
        later = [device.reading() for _ in range(50)]
        for data in later:
            publisher.publish(device.topic("reading"), data)
        failures = agent.outbox.store_failures
        time.sleep(3.0)
        # capped exponential pauses between failing passes (0.25-0.5 s, then 0.5-1 s: the test's
        # cap is 1 s), not a pass per wake-up
        assert 1 <= agent.outbox.store_failures - failures <= 8
        assert agent.store.count_readings() < 350
        assert agent.status()["store"] == "disk-full"
        # every POST since the webhook took them delivered a forward it had not taken: a forward
        # whose mark failed is held, and only its mark is retried
        bodies = [b for _, b in webhook.bodies]
        assert len(bodies) == len(set(bodies))
        assert webhook.posts - posts_at_switch == len(bodies) - taken_at_switch
    finally:
        filler.unlink()
    wait_for(lambda: agent.store.count_readings() == 350, 30, "the readings sent while full stored")
    wait_for(lambda: agent.status()["store"] == "ok", 30, "the store reported healthy again")
    assert admin.get("/healthz").status_code == 200
    assert 'firstparty_store_state{state="ok"} 1.0' in reader.get("/metrics").text
    everything = set(sent + later)
    wait_for(lambda: {b for _, b in webhook.bodies} == everything, 30, "every reading delivered")
    stored = [bytes(r[0]) for r in agent.store.query("SELECT raw FROM messages WHERE kind='reading'")]
    assert sorted(stored) == sorted(everything)  # each stored once
    bodies = [b for _, b in webhook.bodies]
    assert len(bodies) - len(set(bodies)) <= len(everything) // 100  # duplicates within 1 %


def test_postgresqls_disk_full_error_is_reported_as_disk_full_not_as_cannot_commit():
    import psycopg.errors

    from host_agent.store.base import CANNOT_COMMIT, DISK_FULL, write_problem

    assert (
        write_problem(psycopg.errors.DiskFull("could not extend file: No space left on device")) == DISK_FULL
    )
    assert write_problem(psycopg.errors.AdminShutdown("terminating connection")) == CANNOT_COMMIT
