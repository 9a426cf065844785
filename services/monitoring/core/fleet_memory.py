"""Measures what partition monitors cost in memory: one monitor after some traffic, then many,
active and idle (compacted), and a fleet's request index per id. Allocations are counted from
after a warm-up (imports, caches), so the figures are the monitors' own.

`python -m driftloop.services.monitoring.core.fleet_memory [--monitors 1000] [--traced] [--json]`
prints the table: one monitor traced, then the many by the process's resident set (and traced
with --traced). The traffic is a transit-like regression partition: eight numeric features and one
categorical (3,000 reference rows, so 2,000-value reference samples), logs of `--rows-per-log`
rows (a fleet's request rows that one partition answered), 60% of them labelled.
"""

from __future__ import annotations

import argparse
import gc
import json
import tracemalloc
import uuid
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import psutil

from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.fleet import RequestIndex
from driftloop.services.monitoring.core.monitors import ModelMonitors
from driftloop.shared.profile import ReferenceProfile, build_profile

FLEET = "arrivals"


@dataclass(frozen=True)
class Figures:
    monitors: int
    rows_per_monitor: int
    rows_per_log: int
    labels_per_monitor: int
    traced: bool
    """tracemalloc (the monitors' own allocations) or the process's RSS growth."""
    active_kb_each: float
    """After the traffic, before the idle compaction."""
    idle_kb_each: float
    """After the idle compaction (what an idle partition costs)."""
    reference_kb_each: float
    """Of which the reference samples (sorted arrays)."""
    pending_ids_each: int
    """Predictions awaiting labels and ids joined it holds (bounded per fleet by its index)."""
    window_kb_each: float
    """The live window's rows (pandas' deep memory usage)."""
    total_mb: float


def features(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "hour": rng.uniform(0, 24, n),
            "day_of_week": rng.integers(0, 7, n).astype(float),
            "stop_sequence": rng.integers(1, 40, n).astype(float),
            "headway": rng.gamma(4, 3, n),
            "temperature": rng.normal(15, 8, n),
            "rain": rng.exponential(1, n),
            "traffic": rng.uniform(0, 1, n),
            "scheduled": rng.uniform(0, 3600, n),
            "weather": rng.choice(["clear", "rain", "snow"], n, p=[0.7, 0.25, 0.05]),
        }
    )


def reference(rng: np.random.Generator) -> bytes:
    frame = features(rng, 3000)
    predicted = pd.Series(rng.normal(60, 20, 3000))
    profile = build_profile(
        f"{FLEET}/route_id=0",
        "1",
        frame,
        predicted,
        target=predicted + rng.normal(0, 10, 3000),
        metrics={"mae": 8.0, "rmse": 10.0, "holdout_rows": 600.0},
        task="regression",
    )
    return profile.to_json()


def feed(
    monitors: ModelMonitors, model: str, profile: bytes, traffic: pd.DataFrame, per_log: int
) -> None:
    """Build `model`'s monitor from its own parsed profile and feed it the traffic."""
    monitors.switch(model, "1", ReferenceProfile.from_json(profile))
    for start in range(0, len(traffic), per_log):
        monitors.observe(model, "1", traffic.iloc[start : start + per_log], 2000.0)
    labelled = traffic.iloc[: len(traffic) * 6 // 10]
    ids, labels = labelled["_request_id"].tolist(), labelled["_label"].tolist()
    for start in range(0, len(ids), 20):
        monitors.observe_labels(model, ids[start : start + 20], labels[start : start + 20], 2000.0)
    monitors.drain_pending(model)


def traffic_for(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    frame = features(rng, rows)
    frame["_prediction"] = rng.normal(60, 20, rows)
    frame["_ts"] = 1000.0 + np.arange(rows)
    frame["_request_id"] = [uuid.uuid4().hex for _ in range(rows)]
    frame["_label"] = (frame["_prediction"] + rng.normal(0, 10, rows)).astype(str)
    return frame


class Allocated:
    """Bytes allocated since start: traced (tracemalloc: exact, about 5x slower) or the
    process's resident set (psutil: what the machine pays, allocator slack included)."""

    def __init__(self, traced: bool) -> None:
        self.traced = traced
        gc.collect()
        if traced:
            tracemalloc.start()
        self._base = self._now()

    def _now(self) -> int:
        if self.traced:
            return tracemalloc.get_traced_memory()[0]
        return int(psutil.Process().memory_info().rss)

    def bytes(self) -> int:
        gc.collect()
        return self._now() - self._base

    def stop(self) -> None:
        if self.traced:
            tracemalloc.stop()


def measure(count: int, rows: int, per_log: int, *, traced: bool) -> Figures:
    rng = np.random.default_rng(0)
    profile = reference(rng)
    warm = ModelMonitors(DriftPolicy(), journal=True)  # imports, caches and lazy modules
    feed(warm, "warm", profile, traffic_for(rng, rows), per_log)
    warm.report("warm")
    traffic = [traffic_for(rng, rows) for _ in range(min(count, 20))]
    monitors = ModelMonitors(DriftPolicy(), journal=True)
    names = [f"{FLEET}/route_id={i}" for i in range(count)]
    allocated = Allocated(traced)
    try:
        for i, name in enumerate(names):
            feed(monitors, name, profile, traffic[i % len(traffic)], per_log)
        active = allocated.bytes()
        for name in names:
            monitors.get(name).compact()
        idle = allocated.bytes()
    finally:
        allocated.stop()
    monitor = monitors.get(names[0])
    samples = monitor._reference.samples  # noqa: SLF001 - a measurement
    pending = len(monitor._join) + len(monitor._join._joined)  # noqa: SLF001
    return Figures(
        monitors=count,
        rows_per_monitor=rows,
        rows_per_log=per_log,
        labels_per_monitor=rows * 6 // 10,
        traced=traced,
        active_kb_each=active / count / 1e3,
        idle_kb_each=idle / count / 1e3,
        reference_kb_each=sum(a.nbytes for a in samples.values()) / 1e3,
        pending_ids_each=pending,
        window_kb_each=monitor.window.nbytes() / 1e3,
        total_mb=idle / 1e6,
    )


def index_cost(ids: int = 200_000) -> float:
    """Bytes per id of a fleet's RequestIndex holding `ids` request ids of 1,000 partitions."""
    names = [f"{FLEET}/route_id={i}" for i in range(1000)]
    request_ids = [uuid.uuid4().hex for _ in range(ids)]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        index = RequestIndex(ids)
        for start in range(0, ids, 2):
            index.add(names[(start // 2) % 1000], request_ids[start : start + 2])
        size = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return size / ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--monitors", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000, help="rows logged per monitor")
    parser.add_argument("--rows-per-log", type=int, default=2)
    parser.add_argument(
        "--traced", action="store_true", help="also trace the many (exact, about 5x slower)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    found = [measure(1, args.rows, args.rows_per_log, traced=True)]
    found += [
        measure(args.monitors, args.rows, args.rows_per_log, traced=traced)
        for traced in (False, *((True,) if args.traced else ()))
    ]
    index = index_cost()
    if args.json:
        report = {"runs": [asdict(f) for f in found], "index_bytes_per_id": index}
        print(json.dumps(report))  # noqa: T201 - a measurement report
        return
    lines = [
        f"{'monitors':>8} {'measured':>11} {'active kB each':>14} {'idle kB each':>12} "
        f"{'reference kB':>12} {'window kB':>9} {'pending ids':>11} {'total MB':>9}"
    ]
    for f in found:
        lines.append(
            f"{f.monitors:>8} {'tracemalloc' if f.traced else 'RSS':>11} "
            f"{f.active_kb_each:>14.1f} {f.idle_kb_each:>12.1f} {f.reference_kb_each:>12.1f} "
            f"{f.window_kb_each:>9.1f} {f.pending_ids_each:>11} {f.total_mb:>9.1f}"
        )
    f = found[-1]
    lines.append(
        f"each monitor: {f.rows_per_monitor} rows in logs of {f.rows_per_log}, "
        f"{f.labels_per_monitor} labelled; a fleet's request index: {index:.0f} bytes per id"
    )
    print("\n".join(lines))  # noqa: T201 - a measurement report for a human


if __name__ == "__main__":
    main()
