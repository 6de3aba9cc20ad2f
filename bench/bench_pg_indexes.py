"""The API's queries on PostgreSQL at 1e5 and at 1e7 (or `--rows`) readings: an index each, and a
cost that does not grow with the table.

Run: .venv/bin/python bench/bench_pg_indexes.py [--rows 10000000] [--small 100000] [--raw-bytes 140]
(about 10 minutes for 1e7 on 2 cores, most of it filling; 41 minutes for 1e8). A reading takes
about 550 bytes of the readings' table and indexes, 170 of the console's series index and its
hourly sums, and its signed bytes (`--raw-bytes`); the run refuses to start when the disk holding
PostgreSQL's folder has less than that times `--rows`, plus 5 %. One PostgreSQL (Debian's, in a temporary
folder, fsync off: the fill is not what is measured) holds two databases filled the same way by
tests/agent/test_postgres_indexes.py's `fill` (generate_series): 1,000 devices reporting in
turn, every 6 minutes each, ending now (so 1e7 readings span 41 days, six weekly partitions), the
series index of their temp values and its hourly sums, then ANALYZE. Each query the API and the
console make (Store.api_queries: by device, by device + metric + time range, after a cursor,
the latest of a device, the devices, the series buckets, the indexer) runs under
EXPLAIN (ANALYZE, BUFFERS) in both, twice (the second is printed: warm cache, as a server runs);
printed: the scans and their indexes, rows read (rows the scans returned plus rows they filtered
out), buffers touched, time, and the ratio big/small. A query that reads the same rows at 100x the
table has a ratio near 1; a full scan would be near 100.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "firmware"))

import psycopg  # noqa: E402

from host_agent.rig.postgres import Postgres  # noqa: E402
from host_agent.store.dialect import POSTGRES  # noqa: E402
from host_agent.store.postgres import PostgresStore  # noqa: E402
from tests.agent.test_postgres_indexes import RAW_BYTES, fill  # noqa: E402

DEVICES = 1000
GAP_S = 360.0
# the readings' table and indexes without the signed bytes (1e8: 56.5 GB with 16 of them), and the
# series index with its hourly sums, filled in key order (17.0 GB; filled in time order it took
# 19 GB before its GROUP BY spilled, and that run filled the disk)
BYTES_PER_READING = 550 + 170


def _nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def explain(url: str, sql: str, args: tuple) -> dict:
    """One query under EXPLAIN (ANALYZE, BUFFERS): its scans, rows read, buffers, time."""
    with psycopg.connect(url, autocommit=True) as db:
        for _ in range(2):
            row = db.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + POSTGRES.sql(sql), args).fetchone()
    top = row[0][0]
    scans, rows_read = [], 0
    for node in _nodes(top["Plan"]):
        kind = node["Node Type"]
        if "Scan" in kind and "Relation Name" in node:
            loops = node.get("Actual Loops", 1)
            read = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
            rows_read += read
            if read:  # (a Seq Scan that read nothing is of an empty partition: next week's)
                scans.append(
                    f"{kind} {node['Relation Name']}"
                    + (f" ({node['Index Name']})" if "Index Name" in node else "")
                )
        elif kind == "Bitmap Index Scan":
            scans.append(f"Bitmap Index Scan ({node['Index Name']})")
    buffers = top["Plan"].get("Shared Hit Blocks", 0) + top["Plan"].get("Shared Read Blocks", 0)
    return {"scans": scans, "rows": rows_read, "buffers": buffers, "ms": top["Execution Time"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="readings of the big database")
    parser.add_argument("--small", type=int, default=100_000, help="readings of the baseline")
    parser.add_argument("--raw-bytes", type=int, default=RAW_BYTES, help="signed bytes of a reading")
    args = parser.parse_args()
    server = Postgres()
    need = int((args.rows + args.small) * (BYTES_PER_READING + args.raw_bytes) * 1.05)
    free = shutil.disk_usage(server.dir).free
    if free < need:
        server.remove()
        print(f"needs {need / 1e9:.1f} GB free beside {server.dir}, has {free / 1e9:.1f} GB", file=sys.stderr)
        return 2
    server.start()
    try:
        small_url = server.create_database(1)
        started = time.monotonic()
        small = fill(small_url, args.small, DEVICES, GAP_S, raw_bytes=args.raw_bytes)
        print(f"{args.small:,} readings in {time.monotonic() - started:.0f} s", flush=True)
        big_url = server.url
        started = time.monotonic()
        big = fill(
            big_url,
            args.rows,
            DEVICES,
            GAP_S,
            raw_bytes=args.raw_bytes,
            progress=lambda done: print(
                f"  {done:,} readings ({time.monotonic() - started:.0f} s)", flush=True
            ),
        )
        fill_s = time.monotonic() - started
        with psycopg.connect(big_url) as db:
            size = db.execute(
                "SELECT pg_total_relation_size('messages') + COALESCE(("
                "SELECT SUM(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                " WHERE inhparent='messages'::regclass), 0)"
            ).fetchone()[0]
            series = db.execute(
                "SELECT pg_total_relation_size('series') + pg_total_relation_size('series_hour')"
            ).fetchone()[0]
            partitions = db.execute(
                "SELECT COUNT(*) FROM pg_inherits WHERE inhparent='messages'::regclass"
            ).fetchone()[0]
        print(
            f"{args.rows:,} readings in {fill_s:.0f} s ({args.rows / fill_s:,.0f}/s), readings with indexes"
            f" {float(size) / 1e9:.2f} GB, {partitions} partitions, series index and hourly sums"
            f" {float(series) / 1e9:.2f} GB; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
        )
        stores = {"small": PostgresStore(small_url), "big": PostgresStore(big_url)}
        queries = {
            name: stores[name].api_queries(**shape) for name, shape in (("small", small), ("big", big))
        }
        for store in stores.values():
            store.close()
        ratio = args.rows / args.small
        print(
            f"\n| query | scans at {args.rows:.0e} | rows read {args.small:.0e} / {args.rows:.0e} | buffers | ms | ratio (ms) |"
        )
        print("|---|---|---|---|---|---|")
        worst = 0.0
        for name in queries["big"]:
            low = explain(small_url, *queries["small"][name])
            high = explain(big_url, *queries["big"][name])
            full = [
                s for s in high["scans"] if s.startswith("Seq Scan") and ("messages" in s or "series" in s)
            ]
            worst = max(worst, high["ms"] / max(low["ms"], 0.001))
            print(
                f"| {name} | {'; '.join(sorted(set(high['scans'])))} | {low['rows']:,} / {high['rows']:,}"
                f" | {low['buffers']:,} / {high['buffers']:,} | {low['ms']:.2f} / {high['ms']:.2f}"
                f" | {high['ms'] / max(low['ms'], 0.001):.1f}x{'  FULL SCAN' if full else ''} |"
            )
        print(f"\ntable {ratio:.0f}x larger; the slowest query's time grew {worst:.1f}x")
        return 0
    finally:
        server.remove()


if __name__ == "__main__":
    sys.exit(main())
