"""Readings as time series: an index of every numeric value (device, metric, time) and the
downsampled view the console's plots and GET /devices/{device_id}/series read.

A reading's values live only in its signed bytes (store.reading_values decodes them), so a plot
of a year cannot decode its readings on each request. The index holds each numeric value once,
keyed (device_id, metric, t): a range of one metric of one device is one index search, and
`buckets` folds it into at most `points` (min, avg, max) buckets in SQL (the store's:
host_agent.store.timeseries, in SQLite's and PostgreSQL's words). Plots of a month or
more read hourly sums instead (series_hour: count, sum, min, max per hour), so a year of readings
every minute is 8,760 rows instead of 525,600 (0.3-0.5 s of index walk, measured: see
docs/benchmarks.md). The indexer follows the messages table by id (SEARCH by rowid), a batch at a
time, off the ingest path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from host_agent.store.base import Store, reading_values

BATCH = 5000  # readings decoded per transaction of the indexer
MAX_POINTS = 2000
HOUR_S = 3600


@dataclass(slots=True, frozen=True)
class Buckets:
    """One metric of one device over [since_s, until_s) in buckets of `step_s` seconds."""

    device_id: str
    metric: str
    since_s: float
    until_s: float
    step_s: float
    t: list[float]  # each bucket's first time
    min: list[float]
    avg: list[float]
    max: list[float]
    count: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "metric": self.metric,
            "since_s": self.since_s,
            "until_s": self.until_s,
            "step_s": self.step_s,
            "t": self.t,
            "min": self.min,
            "avg": self.avg,
            "max": self.max,
            "count": self.count,
        }


def step_for(since_s: float, until_s: float, points: int) -> float:
    """The bucket width that cuts [since_s, until_s) into at most `points` buckets: whole seconds,
    or whole hours once a bucket is an hour or more (then the hourly sums answer)."""
    step = max(1, math.ceil((until_s - since_s) / points))
    if step >= HOUR_S:
        step = math.ceil(step / HOUR_S) * HOUR_S
    return float(step)


def buckets(
    store: Store, device_id: str, metric: str, since_s: float, until_s: float, points: int
) -> Buckets:
    """min/avg/max of `metric` per time step, at most `points` buckets, empty ones left out.

    With steps of an hour or more the buckets are made of whole hours (UTC), from the hour that
    holds `since_s`, to the hour that holds `until_s`.
    """
    step = step_for(since_s, until_s, points)
    if step >= HOUR_S:
        first_hour, end_hour = int(since_s // HOUR_S), int(math.ceil(until_s / HOUR_S))
        since_s = float(first_hour * HOUR_S)
        rows = store.series_hourly_buckets(device_id, metric, first_hour, end_hour, step)
    else:
        rows = store.series_buckets(device_id, metric, since_s, until_s, step)
    return Buckets(
        device_id,
        metric,
        since_s,
        until_s,
        step,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
    )


def metrics(store: Store, device_id: str) -> list[str]:
    """The metrics a device has reported numbers for, by name."""
    return store.series_metrics(device_id)


def _numbers(body: str | None, raw: bytes) -> list[tuple[str, float]]:
    return [
        (name, float(value))
        for name, _unit, value in reading_values(body, raw)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ]


def catch_up(store: Store, batch: int = BATCH) -> int:
    """Index the readings stored since the last call (up to `batch`); return how many were read
    (0 also when another agent on the same database indexed them first)."""
    after = store.series_cursor()
    rows = store.unindexed_readings(after, batch)
    if not rows:
        return 0
    values: list[tuple[str, str, float, int, float]] = []
    hours: dict[tuple[str, str, int], list[float]] = {}  # n, total, low, high, first_t
    for message_id, device_id, t, body, raw in rows:
        try:
            numbers = _numbers(body, raw)
        except (ValueError, TypeError, KeyError):  # ingest verified it; a row it did not is skipped
            continue
        for name, v in numbers:
            values.append((device_id, name, t, message_id, v))
            cell = hours.get((device_id, name, int(t // HOUR_S)))
            if cell is None:
                hours[(device_id, name, int(t // HOUR_S))] = [1, v, v, v, t]
            else:
                cell[0] += 1
                cell[1] += v
                cell[2] = min(cell[2], v)
                cell[3] = max(cell[3], v)
                cell[4] = min(cell[4], t)
    sums = [
        (*key, int(n), total, low, high, first_t) for key, (n, total, low, high, first_t) in hours.items()
    ]
    return len(rows) if store.add_series(after, rows[-1][0], values, sums) else 0


def prune(store: Store) -> int:
    """Drop the values of readings the store no longer holds (retention); a scan, run rarely."""
    return store.prune_series()
