"""Agents on PostgreSQL against one on SQLite: the store's cost at fleet scale, as ratios of one run.

Run: .venv/bin/python bench/bench_postgres.py   (a few minutes; all traffic on 127.0.0.1)
Each scenario starts its own mosquitto (configured as bench_agent.py's), real agent processes on one
`$share/` group (bench_agent.py --serve), and a route to a JSON-lines file. A fleet's devices
(`--devices`, default one per reading: each reports once in the few seconds measured, as in a
fleet at one reading a minute, so each reading gets a receipt of its own whatever the agents'
speed) have their cards stored first; then their readings are published with QoS 1
while the agents are stopped (SIGSTOP), every one acknowledged by the broker, and the clock runs
from the agents' SIGCONT to the last forward marked delivered: the devices' publishing is not on
the two cores measured (`--live` publishes while the clock runs instead). With `--devices 100`
each device reports 50 times a second: every batch of either agent holds every device, and the
devices' locks (replay windows) make the agents take turns.

1. one agent on SQLite (the baseline)
2. one agent on PostgreSQL (host_agent.rig.postgres: a cluster of its own, fsync on)
3. two agents on PostgreSQL, one database

Reported: readings stored + routed per second (over the clock); readings per agent CPU-second,
the CPU-seconds of PostgreSQL and of the broker per 1,000 readings (read a receipt's interval after
the clock stops, once the readings' receipts are out too), the agents' CPU by thread and their
receipts per reading; bytes stored per reading (messages and outbox). Goals (issue 22): 2 >= 70 %
of 1; 3 >= 1.3x 2 in total, and per agent CPU-second within 15 % of 2's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

sys.path[:0] = [str(Path(__file__).resolve().parent)]

import bench_agent as ba  # noqa: E402

from host_agent.bus.mosquitto import Mosquitto  # noqa: E402
from host_agent.ingest.receipts import RECEIPT_INTERVAL_S  # noqa: E402
from host_agent.rig.postgres import Postgres  # noqa: E402
from host_agent.routes import rules as routing  # noqa: E402
from host_agent.service import RECEIPT_TICK_S  # noqa: E402
from host_agent.store import open_store  # noqa: E402

SCENARIOS = (("sqlite1", 1), ("pg1", 1), ("pg2", 2))  # (name, agent processes)
STATEMENT_CHARS = 110  # of each statement printed by --statements
# a receipt's interval and two of the agent's ticks that send them, and some
RECEIPTS_WAIT_S = RECEIPT_INTERVAL_S + 2 * RECEIPT_TICK_S + 0.2
PG_SIZES = (
    "SELECT COALESCE(SUM(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits"
    " WHERE inhparent = 'messages'::regclass"
)


def postgres_cpu_s(server: Postgres) -> float:
    """CPU seconds of the cluster's processes (postmaster and its children) so far."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    total = ba.cpu_s(postmaster)
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                total += ba.cpu_s(int(status.parent.name))
        except (OSError, ValueError):
            continue
    return total


class LineCounter:
    """The complete lines of a file another process appends to, read on from where the last call left."""

    def __init__(self, path: Path):
        self.path = path
        self.handle: BinaryIO | None = None
        self.lines = 0

    def __call__(self) -> int:
        if self.handle is None:
            if not self.path.exists():
                return 0
            self.handle = self.path.open("rb")
        self.lines += self.handle.read().count(b"\n")
        return self.lines

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def scenario(
    root: Path,
    name: str,
    processes: int,
    total: int,
    url: str | None,
    server: Postgres | None,
    backlog: bool,
    device_count: int,
    statements: bool = False,
) -> dict:
    workdir = root / name
    workdir.mkdir(parents=True)
    broker = Mosquitto(root / f"{name}-broker", extra_config=ba.BROKER_CONFIG).start()
    out = workdir / "forwards.jsonl"
    store = open_store(workdir / "firstparty.db", url)
    spec = routing.validate(
        {"destination": {"type": "file", "path": str(out)}, "devices": ["*"], "metrics": ["*"]}
    )
    store.add_route("bench", spec, None)

    def count(sql: str) -> int:
        return store.query(sql)[0][0]

    agents = []
    client = None
    try:
        for i in range(processes):
            settings = ba.settings(workdir / f"agent{i}", broker, f"bench-{name}-{i}", shared_group="bench")
            settings["store"] = {"url": url} if url else {"path": str(workdir / "firstparty.db")}
            agents.append(ba.AgentProcess(settings, workdir, f"agent{i}"))
        client = ba.Client(broker, f"bench-{name}-publisher")
        devices = ba.make_devices(device_count, 5_000_000 + processes * 100_000 + (50_000 if url else 0))
        for device in devices:
            client.publish(device.topic("card"), device.card())
        ba.wait_until(lambda: count(ba.DEVICES) >= len(devices), 120, "the cards in the store")
        stream = ba.interleaved(devices, total)
        assert broker.process is not None
        if backlog:
            publish_backlog(client, stream, agents)
        if statements and url:  # from here on: the clock's statements only
            store.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            store.query("SELECT pg_stat_statements_reset()")
        agent_cpu0 = [ba.cpu_s(a.pid) for a in agents]
        thread_cpu0 = [ba.thread_cpu_s(a.pid) for a in agents]
        pg_cpu0 = postgres_cpu_s(server) if server else 0.0
        broker_cpu0 = ba.cpu_s(broker.process.pid)
        own_cpu0 = time.process_time()
        with ba.collector_paused():
            start_s = time.perf_counter()
            if backlog:
                for agent in agents:
                    os.kill(agent.pid, signal.SIGCONT)
            else:
                for topic, data in stream:
                    client.publish(topic, data)
            deadline = time.monotonic() + 300
            # progress from the route's file, not from the store: a COUNT(*) every 20 ms cost
            # PostgreSQL (and SQLite's one writer) a tenth of a core beside what is measured
            written = LineCounter(out)
            while written() < total and time.monotonic() < deadline:
                time.sleep(0.02)
            while count(ba.UNDELIVERED) and time.monotonic() < deadline:  # the last marks: a few asks
                time.sleep(0.02)
            written.close()
            elapsed_s = time.perf_counter() - start_s
            # The agents' CPU is read once the readings' receipts are out too: the last leave a
            # receipt's interval after the last commit. (Read at the last forward, the faster
            # scenario, with the shorter clock, left a larger share of its receipts out.)
            time.sleep(RECEIPTS_WAIT_S)
        agent_cpu = [ba.cpu_s(a.pid) - c for a, c in zip(agents, agent_cpu0, strict=True)]
        thread_cpu = [ba.thread_cpu_s(a.pid) for a in agents]
        pg_cpu = postgres_cpu_s(server) - pg_cpu0 if server else 0.0
        broker_cpu = ba.cpu_s(broker.process.pid) - broker_cpu0
        own_cpu = time.process_time() - own_cpu0
        by_statement = (
            {
                " ".join(sql.split())[:STATEMENT_CHARS]: 1000 * ms / total
                for ms, sql in store.query(
                    "SELECT total_exec_time, query FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12"
                )
            }
            if statements and url
            else {}
        )
        stored, delivered = count(ba.STORED), count(ba.DELIVERED)
        if url:
            messages_bytes = count(PG_SIZES)
            outbox_bytes = count("SELECT pg_total_relation_size('outbox')")
        else:
            page = count("PRAGMA page_size")
            messages_bytes = (
                sum(r[0] for r in store.query("SELECT pgsize FROM dbstat WHERE name LIKE 'messages%'"))
                if _has_dbstat(store)
                else count("PRAGMA page_count") * page
            )
            outbox_bytes = (
                sum(r[0] for r in store.query("SELECT pgsize FROM dbstat WHERE name LIKE 'outbox%'"))
                if _has_dbstat(store)
                else 0
            )
    finally:
        if client:
            client.close()
        finals = [agent.stop() for agent in agents]
        store.close()
        broker.stop()
    if stored != total or delivered != total:
        raise RuntimeError(f"{name}: {stored} stored and {delivered} delivered of {total} readings")
    by_thread: dict[str, float] = {}
    for final, before, after in zip(finals, thread_cpu0, thread_cpu, strict=True):
        for tid, used_s in after.items():
            # asyncio_0, asyncio_1, ...: the loop's executor, one group whichever worker ran what
            name = final.get("threads", {}).get(str(tid), "ended").rstrip("0123456789").rstrip("_-")
            by_thread[name] = by_thread.get(name, 0.0) + used_s - before.get(tid, 0.0)
    lines = out.read_text().splitlines()
    if len(lines) != total:
        raise RuntimeError(f"{name}: {len(lines)} lines in the file for {total} readings")
    return {
        "rate": total / elapsed_s,
        "per_agent_cpu_s": total / sum(agent_cpu),
        "agent_cpu_s": agent_cpu,
        "pg_cpu_s_per_1000": 1000 * pg_cpu / total,
        # the publisher's PUBLISH in, the agents' deliveries and PUBACKs: one broker's share per reading
        "broker_cpu_s_per_1000": 1000 * broker_cpu / total,
        # this script's: the publisher's paho thread (live only) and the polling of the route's file
        "bench_cpu_s_per_1000": 1000 * own_cpu / total,
        "messages_bytes_per_reading": messages_bytes / total,
        "outbox_bytes_per_reading": outbox_bytes / total,
        "split": [f.get("accepted", {}).get("reading", 0) for f in finals],
        "readings_per_commit": total / max(1, sum(f.get("commits", 0) for f in finals)),
        "receipts_per_reading": sum(f.get("receipts_sent", 0) for f in finals) / total,
        # the agents' CPU by thread, microseconds a reading (all agents together)
        "us_by_thread": {name: 1e6 * used_s / total for name, used_s in sorted(by_thread.items())},
        # --statements: PostgreSQL's time in each statement (pg_stat_statements), microseconds a reading
        "pg_us_by_statement": by_statement,
    }


def publish_backlog(client: ba.Client, stream: list[tuple[str, bytes]], agents: list) -> None:
    """The whole stream into the broker while the agents are stopped (SIGSTOP), every message
    acknowledged to the publisher before the clock starts.

    The devices of a fleet are machines of their own: their publishing costs the agents' machine
    nothing. Publishing live from this script put a paho client's Python on the same two cores as
    what is measured. Stopped, the agents stay subscribed:
    the broker hands each message of the `$share/` group to one of them as it arrives and queues it
    in that agent's session, so the split is the broker's own.
    """
    for agent in agents:
        os.kill(agent.pid, signal.SIGSTOP)
    try:
        with ba.collector_paused():
            for topic, data in stream:
                client.publish(topic, data)
            while client.outstanding:
                info = client.outstanding.popleft()
                info.wait_for_publish(60)
                if not info.is_published():
                    raise RuntimeError("the broker did not acknowledge the backlog")
    except BaseException:
        for agent in agents:
            os.kill(agent.pid, signal.SIGCONT)
        raise


def _has_dbstat(store) -> bool:
    try:
        store.query("SELECT 1 FROM dbstat LIMIT 1")
        return True
    except Exception:  # noqa: BLE001 - SQLite built without the dbstat table
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20000, help="readings in each scenario")
    parser.add_argument(
        "--live",
        action="store_true",
        help="publish while the clock runs (the publisher shares the cores) instead of a backlog",
    )
    parser.add_argument(
        "--devices",
        type=int,
        help="devices in the stream, round robin (default: one per reading; 100: each reports 50"
        " times a second, not a fleet)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the three scenarios, in turn (every other round in the reverse order); the"
        " figures and each round's ratios: medians",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="also print PostgreSQL's time by statement (pg_stat_statements, loaded in the cluster)",
    )
    args = parser.parse_args()
    # With fewer devices than readings, a device's next reading can come within a receipt's
    # interval (host_agent.ingest.receipts) of the last and share its receipt: how often
    # depends on the agents' speed, so faster scenarios would sign fewer receipts a reading.
    devices = args.devices or args.readings
    backlog = not args.live
    server = Postgres(fsync=True, preload=("pg_stat_statements",) if args.statements else ()).start()
    rounds: dict[str, list[dict]] = {"sqlite1": [], "pg1": [], "pg2": []}
    try:
        with tempfile.TemporaryDirectory(prefix="fp-bench-pg-") as tmp:
            for number in range(args.rounds):
                root = Path(tmp) / f"round{number}"
                # every other round in the reverse order: a scenario's place in the round (after
                # SQLite's fsyncs, or first on a machine that just sat idle) favours none of them
                order = SCENARIOS if number % 2 == 0 else SCENARIOS[::-1]
                for name, processes in order:
                    url = server.create_database(processes) if name.startswith("pg") else None
                    result = scenario(
                        root,
                        name,
                        processes,
                        args.readings,
                        url,
                        server if url else None,
                        backlog,
                        devices,
                        args.statements,
                    )
                    rounds[name].append(result)
                    print(f"round {number + 1} {name:8} {_line(result)}", flush=True)
    finally:
        server.remove()
    results = {name: _median(each) for name, each in rounds.items()}
    for name, r in results.items():
        print(f"median  {name:8} {_line(r)}")

    # each round's ratios (its scenarios ran within a minute of each other, so the machine's
    # drift between rounds cancels), then their median
    def ratio(top: str, bottom: str, key: str) -> str:
        each = [t[key] / b[key] for t, b in zip(rounds[top], rounds[bottom], strict=True)]
        return f"{statistics.median(each):.2f} (rounds {', '.join(f'{r:.2f}' for r in each)})"

    print(
        f"one agent on PostgreSQL / one on SQLite: {ratio('pg1', 'sqlite1', 'rate')} (goal >= 0.70)\n"
        f"two agents on PostgreSQL / one: {ratio('pg2', 'pg1', 'rate')} in total (goal >= 1.3),"
        f" per agent CPU-second {ratio('pg2', 'pg1', 'per_agent_cpu_s')} (goal within 0.85-1.15)"
    )
    print(json.dumps(rounds, default=float))


def _line(r: dict) -> str:
    return (
        f"{r['rate']:8,.0f} readings/s  {r['per_agent_cpu_s']:7,.0f} per agent CPU-s"
        f"  postgres {r['pg_cpu_s_per_1000']:.3f} CPU-s/1000  broker {r['broker_cpu_s_per_1000']:.3f} CPU-s/1000"
        f"  bench {r['bench_cpu_s_per_1000']:.3f}  stored {r['messages_bytes_per_reading']:.0f}"
        f" + {r['outbox_bytes_per_reading']:.0f} B/reading  {r['readings_per_commit']:.0f} a commit"
        f"  {r['receipts_per_reading']:.2f} receipts a reading  split {r['split']}"
        + "\n          agent us/reading by thread: "
        + ", ".join(f"{name} {us:.0f}" for name, us in r["us_by_thread"].items())
        + "".join(
            f"\n          postgres {us:5.1f} us/reading  {sql}" for sql, us in r["pg_us_by_statement"].items()
        )
    )


def _median(results: list[dict]) -> dict:
    """Each figure's median over the rounds (the split: the first round's)."""

    def median(key: str, value):
        if isinstance(value, float):
            return statistics.median(r[key] for r in results)
        if isinstance(value, dict):  # by thread, by statement
            names = {name for r in results for name in r[key]}
            each = {name: statistics.median(r[key].get(name, 0.0) for r in results) for name in sorted(names)}
            # threads by name; statements the costliest first
            return each if key == "us_by_thread" else dict(sorted(each.items(), key=lambda item: -item[1]))
        return value

    return {key: median(key, value) for key, value in results[0].items()}


if __name__ == "__main__":
    main()
