"""The console's series on both stores: the same buckets from SQLite and PostgreSQL (each in its
own SQL), and on one PostgreSQL shared by several agents, an index that misses no reading and
counts none twice."""

from __future__ import annotations

import os
import threading
import time

import pytest

from host_agent.console import series
from host_agent.store.postgres import PostgresStore
from host_agent.store.sqlite import SQLiteStore
from tests.agent.conftest import FakeDevice
from tests.console.conftest import reading_at

pytestmark = pytest.mark.postgresql

DAY_S = 86400


@pytest.fixture
def pg_url(postgres_server) -> str:
    postgres_server.reset()
    return postgres_server.url


@pytest.fixture
def stores(tmp_path, pg_url):
    opened = [SQLiteStore(tmp_path / "firstparty.db"), PostgresStore(pg_url)]
    yield opened
    for store in opened:
        store.close()


def _store_readings(store, device: FakeDevice, times_values: list[tuple[float, float]]) -> None:
    """Readings of `device` at these (time, temp) as ingest stores them (ids held to the commit)."""
    with store.transaction() as db:
        ids = db.new_message_ids(len(times_values))
        db.insert_messages(
            [
                (
                    i,
                    device.device_id,
                    "reading",
                    1,
                    i,
                    int(t),
                    t,
                    reading_at(device, [("temp", "Cel", v)], t),
                    None,
                    ",temp,",
                    0,
                )
                for i, (t, v) in zip(ids, times_values, strict=True)
            ]
        )


def _index_all(store) -> None:
    while series.catch_up(store):
        pass


def test_series_buckets_are_the_same_on_sqlite_and_postgresql(stores):
    """Times that fall late in a bucket (PostgreSQL's CAST would round them into the next one),
    both range kinds (per reading and hourly sums), and a metric that is not there."""
    device = FakeDevice(os.urandom(32))
    start = (int(time.time()) // DAY_S - 3) * DAY_S
    # every 7 minutes for 3 days, value i; times whole seconds (a reading's signed time)
    readings = [(float(start + i * 420), float(i)) for i in range(3 * DAY_S // 420)]
    answers = []
    for store in stores:
        _store_readings(store, device, readings)
        _index_all(store)
        answers.append(
            {
                "fine": series.buckets(store, device.device_id, "temp", start, start + 3600, 6),
                "odd step": series.buckets(store, device.device_id, "temp", start + 1, start + 7 * 3600, 17),
                "hourly": series.buckets(store, device.device_id, "temp", start, start + 3 * DAY_S, 3),
                "six hours": series.buckets(
                    store, device.device_id, "temp", start + 100, start + 2 * DAY_S, 8
                ),
                "none": series.buckets(store, device.device_id, "hum", start, start + DAY_S, 10),
                "metrics": series.metrics(store, device.device_id),
            }
        )
    sqlite, postgres = answers
    assert sqlite == postgres
    fine = sqlite["fine"]
    # 600 s buckets from `start`: readings at 0, 420 | 840 | 1260, 1680 | 2100 | 2520, 2940 | 3360
    # (1680 is 2.8 buckets in: a rounding CAST would put it in the next one)
    assert fine.step_s == 600 and fine.count == [2, 1, 2, 1, 2, 1]
    assert fine.t == [start, start + 840, start + 1260, start + 2100, start + 2520, start + 3360]
    assert fine.avg == [0.5, 2.0, 3.5, 5.0, 6.5, 8.0] and fine.min == [0.0, 2, 3, 5, 6, 8]
    hourly = sqlite["hourly"]
    per_day = DAY_S // 420 + 1  # 205.7 readings a day: days of 206, 206 and 205
    assert hourly.step_s == DAY_S and sum(hourly.count) == len(readings) and max(hourly.count) == per_day
    assert hourly.min[0] == 0.0 and hourly.max[-1] == float(len(readings) - 1)
    assert sqlite["none"].count == [] and sqlite["metrics"] == ["temp"]
    assert sum(sqlite["odd step"].count) == len([t for t, _ in readings if start + 1 <= t < start + 7 * 3600])


def test_the_postgresql_indexer_waits_for_message_ids_an_ingest_still_holds(pg_url):
    """Ids come from a sequence and commits come in any order: an index that moved past an id
    still uncommitted would never plot that reading."""
    slow, fast, indexer = PostgresStore(pg_url), PostgresStore(pg_url), PostgresStore(pg_url)
    device, other = FakeDevice(os.urandom(32)), FakeDevice(os.urandom(32))
    now = float(int(time.time()))
    holding, release, settled = threading.Event(), threading.Event(), []

    def slow_ingest():
        with slow.transaction() as db:
            (message_id,) = db.new_message_ids(1)
            raw = reading_at(device, [("temp", "Cel", 1.0)], now)
            db.insert_messages(
                [(message_id, device.device_id, "reading", 1, 0, int(now), now, raw, None, ",temp,", 0)]
            )
            holding.set()
            release.wait(10)

    try:
        ingest = threading.Thread(target=slow_ingest)
        ingest.start()
        assert holding.wait(10)
        _store_readings(fast, other, [(now, 2.0)])  # a larger id, committed first
        waiter = threading.Thread(target=lambda: settled.append(indexer.settled_message_id()))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive(), "the horizon moved past an id still held"
        release.set()
        ingest.join(10)
        waiter.join(10)
        _index_all(indexer)
        assert settled and settled[0] >= 2
        assert [
            series.buckets(indexer, d.device_id, "temp", now - 60, now + 60, 10).count
            for d in (device, other)
        ] == [
            [1],
            [1],
        ]
    finally:
        release.set()
        for store in (slow, fast, indexer):
            store.close()


def test_two_agents_indexing_one_postgresql_count_each_reading_once(pg_url):
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    device = FakeDevice(os.urandom(32))
    start = float(int(time.time()) // 3600 * 3600 - 10 * 3600)
    readings = [(start + i * 6, float(i % 100)) for i in range(6000)]  # 10 hours
    for chunk in range(0, len(readings), 500):
        _store_readings(first, device, readings[chunk : chunk + 500])
    errors = []

    def index(store):
        try:
            for _ in range(200):  # until neither finds anything (a lost race returns 0 too)
                if not series.catch_up(store, 700) and store.series_cursor() >= len(readings):
                    return
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    try:
        threads = [threading.Thread(target=index, args=(store,)) for store in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        assert first.query("SELECT COUNT(*) FROM series")[0][0] == len(readings)
        assert first.query("SELECT SUM(n) FROM series_hour")[0][0] == len(readings)
        both = [
            series.buckets(store, device.device_id, "temp", start, start + 36000, 10)
            for store in (first, second)
        ]
        assert both[0] == both[1] and both[0].count == [600] * 10
    finally:
        first.close()
        second.close()
