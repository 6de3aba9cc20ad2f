"""The API's queries on PostgreSQL search an index and prune partitions: none reads the readings
(`messages`, each week's partition) or the series index whole. A full scan grows with the table,
so it would not hold at 1e8 rows (bench/bench_pg_indexes.py measures 1e5 against 1e7).

The planner is left alone (no enable_seqscan=off): the tables get a realistic shape (devices
reporting in turn, ids in time order, weekly partitions) and ANALYZE, and the plans are read
with EXPLAIN.
"""

from __future__ import annotations

import re
import time

import psycopg
import pytest

from host_agent.ingest.intake import Ingest
from host_agent.routes import rules as routing
from host_agent.store.dialect import POSTGRES
from host_agent.store.postgres import PostgresStore
from host_agent.store.sqlite import SQLiteStore

pytestmark = pytest.mark.postgresql

RAW_BYTES = 140  # a signed reading of two values (temp, hum) is 130-150 bytes


def _device_id(k: int) -> str:
    """The fill's device k, as its SQL names it ('d' || lpad(k, 23, '0'))."""
    return "d" + str(k).rjust(23, "0")


def fill(
    url: str,
    rows: int,
    devices: int,
    gap_s: float,
    chunk: int = 1_000_000,
    progress=None,
    raw_bytes: int = RAW_BYTES,
) -> dict:
    """Readings of `devices` devices in turn, one every `gap_s` per device, ending now, as ingest
    stores them (ids in time order, each week in its partition); the series index of their temp
    values and its hourly sums; ANALYZE. Returns a device in the middle and the time range."""
    store = PostgresStore(url)
    per_device = rows // devices
    end = float(int(time.time()))
    start = end - per_device * gap_s
    week = POSTGRES.PARTITION_S
    for low in range(int(start // week) * week, int(end) + week, week):
        store.ensure_partitions(low)
    store.close()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "INSERT INTO devices (device_id, public_key, card, state, first_seen, last_seen)"
            " SELECT 'd' || lpad(k::text, 23, '0'), '\\x00'::bytea, '\\x00'::bytea, 'accepted', %s, %s"
            " FROM generate_series(0, %s - 1) AS k",
            (start, end, devices),
        )
        for low in range(0, per_device * devices, chunk):
            high = min(low + chunk, per_device * devices)
            db.execute(
                "INSERT INTO messages (device_id, kind, boot, seq, time_s, received_s, raw, metrics, held)"
                " SELECT 'd' || lpad((g %% %(d)s)::text, 23, '0'), 'reading', 1, g / %(d)s,"
                " (%(start)s + (g / %(d)s) * %(gap)s)::bigint, %(start)s + (g / %(d)s) * %(gap)s + 0.2,"
                " decode(repeat('a5', %(raw)s), 'hex'), ',temp,hum,', 0"
                " FROM generate_series(%(low)s, %(high)s - 1) AS g ORDER BY g",
                {"d": devices, "start": start, "gap": gap_s, "raw": raw_bytes, "low": low, "high": high},
            )
            if progress:
                progress(high)
        first, top = db.execute("SELECT min(id), max(id) FROM messages").fetchone()
        assert top - first + 1 == per_device * devices, "the readings' ids have gaps"
        # The series index device by device, in its key's order, each reading's id computed as
        # the fill gave it (the reading g of the stream has id first + g): no sort of all rows,
        # and a B-tree filled in order (at 1e8 rows, the same rows inserted from `messages` in
        # time order made an index of 11 GB, half-empty pages, and a GROUP BY that spilled).
        for k in range(devices):
            device_id = _device_id(k)
            db.execute(
                "INSERT INTO series SELECT %(id)s, 'temp', (%(start)s + j * %(gap)s)::bigint,"
                " %(first)s + j * %(d)s + %(k)s, ((%(first)s + j * %(d)s + %(k)s) %% 100)::float8"
                " FROM generate_series(0, %(n)s - 1) AS j ORDER BY j",
                {"id": device_id, "start": start, "gap": gap_s, "first": first, "d": devices, "k": k,
                 "n": per_device},
            )  # fmt: skip
            db.execute(
                "INSERT INTO series_hour SELECT device_id, metric, floor(t / 3600)::bigint, count(*),"
                " sum(v), min(v), max(v), min(t) FROM series WHERE device_id = %s AND metric = 'temp'"
                " GROUP BY 1, 2, 3",
                (device_id,),
            )
        db.execute("INSERT INTO series_state VALUES (1, %s)", (max(0, top - 1000),))
        db.execute("ANALYZE")
    middle = start + (end - start) / 2
    return {
        "device_id": _device_id(devices // 2),
        "metric": "temp",
        "since_s": middle,
        "until_s": middle + 86400,
        "cursor_id": max(0, top - 1000),
    }


def full_scans(plan: list[str]) -> list[str]:
    """The lines of a plan that read all of a partition of the readings, or of the series index,
    that holds rows (an empty partition, next week's, costs nothing to look at)."""
    return [
        line.strip()
        for line in plan
        if "Seq Scan on " in line
        and any(f" on {table}" in line for table in ("messages", "series"))
        and "cost=0.00..0.00 " not in line
    ]


@pytest.fixture
def pg_url(postgres_server) -> str:
    postgres_server.reset()
    return postgres_server.url


def test_no_query_of_the_api_reads_the_whole_readings_table_on_postgresql(pg_url):
    shape = fill(pg_url, rows=20_000, devices=100, gap_s=3600.0)  # 200 hours: two or three weeks
    store = PostgresStore(pg_url)
    try:
        plans = store.query_plans(**shape)
        scans = {name: full_scans(plan) for name, plan in plans.items() if full_scans(plan)}
        assert not scans, "\n".join(f"{name}:\n  " + "\n  ".join(plan) for name, plan in plans.items())
        # a time range of a device is one range of an index (by the time the readings were signed)
        ranged = [
            line for line in plans["readings of a device, metric and time range"] if "Index Cond" in line
        ]
        assert ranged and all("COALESCE" in line for line in ranged), plans
        assert "_device_id_kind_coalesce_idx" in " ".join(
            plans["readings of a device, metric and time range"]
        )
        # and the check can fail: a query on a column without an index is a full scan
        assert full_scans(store.plan("SELECT id FROM messages WHERE raw=?", (b"x",)))
    finally:
        store.close()


def test_no_query_of_the_api_reads_the_whole_readings_table_on_sqlite(tmp_path):
    """The same queries on SQLite's planner (no statistics needed: it ranks indexes by their form)."""
    store = SQLiteStore(tmp_path / "firstparty.db")
    try:
        plans = store.query_plans("d" * 24, "temp", 1.8e9, 1.8e9 + 86400, 1000)
        readings = [line for name, plan in plans.items() if name != "token of a session" for line in plan]
        assert not [
            line for line in readings if re.match(r"SCAN (messages|series|series_hour|devices)\b", line)
        ], plans
        assert "messages_signed_time" in plans["readings of a device, metric and time range"][0], plans
    finally:
        store.close()


def test_a_forward_reads_its_reading_in_one_week_of_the_readings_on_postgresql(pg_url, device):
    """The outbox's claim finds each forward's reading by id and received_s, the partition key:
    one week's index looked up, however many weeks are kept (by id alone it was every week's)."""
    fill(pg_url, rows=20_000, devices=100, gap_s=6 * 3600.0)  # 1,200 hours: seven or eight weeks
    store = PostgresStore(pg_url)
    try:
        store.add_route(
            "file", routing.validate({"destination": {"type": "file", "path": "/dev/null"}}), None
        )
        ingest = Ingest(store, auto_accept=True, shared=True)
        ingest.process([(device.topic("card"), device.card()), (device.topic("reading"), device.reading())])
        plan = [
            row[0]
            for row in store.query(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + store.dialect.due, (2e9, 200)
            )
        ]
        weeks = [line for line in plan if re.search(r" on messages_p\d+ ", line)]
        read = [line for line in weeks if "never executed" not in line]
        assert len(weeks) >= 7 and len(read) == 1, "\n".join(plan)
        assert "actual rows=1 " in read[0], "\n".join(plan)
    finally:
        store.close()
