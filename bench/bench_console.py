"""The console with 1,000 devices and 1,000,000 readings: the devices page and a one-year plot,
timed in the browser (headless Chromium), and the query plans of the pages' queries.

Run: .venv/bin/python bench/bench_console.py   (about 3 minutes, most of it signing the readings)
The store is built with the real codec: 1,000 devices with signed cards, one of them ("the
plotted device") with a reading a minute for a year (525,600), the 474,400 others spread over the
999 others; each reading carries temp and hum. The console's series index is filled by its own
indexer (host_agent.console.series.catch_up, timed). A real agent then serves that store on a
loopback mosquitto, and Chromium (Debian's, as the browser tests drive it) loads:
1. the devices page: until the load event (performance navigation timing), 5 times;
2. the plotted device's page with the 1-year range: until every plot is drawn (the page's
   `data-plots-drawn`, ms since navigation start), 5 times; and, as the baseline of the same run,
   the same page with the 1-hour range (60 readings a plot).
The SQL of one year's buckets is also timed on the hourly sums (what the page uses) against the
per-reading index (the baseline), and every query of the pages goes through EXPLAIN QUERY PLAN:
a SCAN of a table fails the run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fp import messages  # noqa: E402
from fp.ids import id_from_public_key  # noqa: E402
from host_agent import config as agent_config  # noqa: E402
from host_agent import wire  # noqa: E402
from host_agent.api import tokens  # noqa: E402
from host_agent.bus.mosquitto import Mosquitto  # noqa: E402
from host_agent.console import auth, pages, series  # noqa: E402
from host_agent.service import start_in_thread  # noqa: E402
from host_agent.store.sqlite import SQLiteStore  # noqa: E402

DEVICES = 1000
READINGS = 1_000_000
YEAR_S = 365 * 86400
BIG = 525_600  # the plotted device: one reading a minute for a year
RUNS = 5


def build(path: Path) -> str:
    """Write the store; return the plotted device's id."""
    store = SQLiteStore(path)
    now = int(time.time())
    seeds = [os.urandom(32) for _ in range(DEVICES)]
    signers = [(wire.nacl_signer(seed), wire.nacl_public_key(seed)) for seed in seeds]
    ids = [id_from_public_key(public) for _, public in signers]
    with store.transaction() as db:
        for (sign, public), device_id in zip(signers, ids, strict=True):
            card = messages.encode_card(sign, public, "sim", "0.1.0", now - YEAR_S, None)
            db.execute(
                "INSERT INTO devices (device_id, public_key, card, name, board, firmware, state, first_seen,"
                " last_seen, last_status) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    device_id,
                    public,
                    card,
                    f"device {device_id[:4]}",
                    "sim",
                    "0.1.0",
                    "accepted",
                    now - YEAR_S,
                    now,
                    '{"state": "online", "buffered": 0, "dropped": 0}',
                ),
            )
    plans = [(0, BIG, 60)] + [(i, (READINGS - BIG) // (DEVICES - 1), 0) for i in range(1, DEVICES)]
    started, done = time.monotonic(), 0
    for index, count, step in plans:
        sign, _ = signers[index]
        device_id = ids[index]
        gap = step or YEAR_S // count
        rows = []
        for seq in range(count):
            t = now - YEAR_S + seq * gap
            values = [("temp", "Cel", 20 + (seq % 1440) / 144), ("hum", "%RH", 40 + seq % 20)]
            raw = messages.encode_reading(sign, device_id, 1, seq, values, t)
            rows.append((device_id, "reading", 1, seq, t, t + 0.2, raw, ",temp,hum,"))
            if len(rows) == 20_000 or seq == count - 1:
                with store.transaction() as db:
                    db.executemany(
                        "INSERT INTO messages (device_id, kind, boot, seq, time_s, received_s, raw, metrics)"
                        " VALUES (?,?,?,?,?,?,?,?)",
                        rows,
                    )
                done += len(rows)
                rows = []
        if index == 0 or index % 200 == 0:
            print(f"  {done:,} readings signed and stored ({time.monotonic() - started:.0f} s)", flush=True)
    started = time.monotonic()
    while series.catch_up(store, 20_000):
        pass
    took = time.monotonic() - started
    print(f"series index: {READINGS:,} readings in {took:.1f} s ({READINGS / took:,.0f} readings/s, once)")
    store.close()
    return ids[0]


def sql_ms(store: SQLiteStore, sql: str, args: tuple) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        store.query(sql, args)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the store here once and reuse it next time")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="fp-bench-console-"))
    data = root / "agent"
    data.mkdir(parents=True, exist_ok=True)
    marker = root / "plotted-device"
    if not marker.exists():
        print(f"building the store in {data} ...", flush=True)
        marker.write_text(build(data / "firstparty.db"))
    device_id = marker.read_text().strip()

    store = SQLiteStore(data / "firstparty.db")
    now = time.time()
    since, until = now - YEAR_S, now
    step = series.step_for(since, until, pages.DEFAULT_POINTS)
    hour = series.HOUR_S
    hourly = (
        float(int(since // hour) * hour),
        step,
        device_id,
        "temp",
        int(since // hour),
        int(until // hour) + 1,
    )
    raw = (since, step, device_id, "temp", since, until)
    scans = []
    print("query plans (EXPLAIN QUERY PLAN):")
    for name, plan in store.query_plans(device_id, "temp", since, until).items():
        print(f"  {name}: {'; '.join(plan)}")
        # a SCAN of a table (the metric names' recursive query scans its own few rows: "SCAN m")
        scans += [
            f"{name}: {line}"
            for line in plan
            if re.match(r"SCAN (messages|series|series_hour|devices)\b", line)
        ]
    hourly_ms = sql_ms(store, store.dialect.series_hourly_buckets, hourly)
    raw_ms = sql_ms(store, store.dialect.series_buckets, raw)
    print(
        f"one year of temp in {pages.DEFAULT_POINTS} buckets, SQL: hourly sums {hourly_ms:.1f} ms,"
        f" per-reading index {raw_ms:.1f} ms (baseline; {raw_ms / hourly_ms:.0f}x)"
    )
    store.close()

    broker = Mosquitto(root / "broker").start()
    settings = {
        "data_dir": str(data),
        "broker": {"embedded": False, "host": broker.host, "port": broker.port, "client_id": "bench"},
        "api": {"port": 0},
    }
    agent, thread = start_in_thread(agent_config.from_dict(settings))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.console.conftest import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='fp-bench-chromium-')}")
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        base = f"http://127.0.0.1:{agent.api_port}"
        token = tokens.issue(agent.store, "bench-" + os.urandom(3).hex(), "admin")
        browser.get(base + auth.link_url("", auth.create_link_code(agent.store, token)))
        WebDriverWait(browser, 30).until(lambda b: b.current_url.rstrip("/") == base)

        def page_ms(path: str, script: str) -> float:
            times = []
            for _ in range(RUNS):
                browser.get(base + path)
                times.append(
                    float(
                        WebDriverWait(browser, 30, poll_frequency=0.02).until(
                            lambda b: b.execute_script(script)
                        )
                    )
                )
            return statistics.median(times)

        load = "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd || null;"
        drawn = "return document.body.dataset.plotsDrawn || null;"
        rows = browser.execute_script("return document.querySelectorAll('#device-list tbody tr').length")
        devices_ms = page_ms("/", load)
        year_ms = page_ms(f"/console/devices/{device_id}?range=1y", drawn)
        points = browser.execute_script(
            "return document.querySelector('figure[data-metric=temp]').dataset.points"
        )
        hour_ms = page_ms(f"/console/devices/{device_id}?range=1h", drawn)
        print(
            f"devices page ({rows} rows of {DEVICES:,} devices): {devices_ms:.0f} ms to the load event (median of {RUNS})"
        )
        print(
            f"device page, one year ({BIG:,} readings a metric, {points} buckets drawn): {year_ms:.0f} ms to the"
            f" plots drawn; baseline one hour: {hour_ms:.0f} ms ({year_ms / hour_ms:.2f}x)"
        )
        ok = devices_ms < 1000 and year_ms < 1000 and not scans
        for scan in scans:
            print(f"FULL SCAN: {scan}")
        print("goal (each under 1 s, no full scan): " + ("met" if ok else "NOT met"))
        return 0 if ok else 1
    finally:
        browser.quit()
        agent.request_stop()
        thread.join(15)
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
