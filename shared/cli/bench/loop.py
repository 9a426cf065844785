"""`driftloop bench loop [--broker embedded|kafka|both]`: the whole loop on a real stack (on the
embedded broker or on Apache Kafka) under steady prediction traffic; drift episodes one after
another, each timed from the first drifted record to the new version answering, split into
detection, data accumulation, fitting and the platform's own overhead."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer

from driftloop.shared.cli.bench.brokers import HELP as BROKER_HELP
from driftloop.shared.cli.bench.brokers import LABELS
from driftloop.shared.timestamps import seconds_or_none

KEYS = (
    ("detect_s", "detect"),
    ("train_start_s", "train start"),
    ("data_wait_s", "data wait"),
    ("fit_s", "fit"),
    ("promote_s", "promote"),
    ("deployed_s", "deploy"),
    ("serving_s", "answers"),
    ("overhead_s", "overhead"),
)


def measure(ep: Any, events: list[Any], runs: list[Any]) -> dict[str, Any]:
    """One episode's timings (seconds after its first drifted record) from events and its run."""
    row: dict[str, Any] = {"episode": ep.index + 1, "shift": ep.shift, "version": ep.new_version}
    drift = next(
        (
            e
            for e in events
            if e.type == "DriftDetected" and (seconds_or_none(e.occurred_at) or 0) >= ep.t0 - 0.5
        ),
        None,
    )
    if drift is None or ep.serving_at is None:
        return {**row, "closed": False}
    corr = drift.correlation_id
    chain = [e for e in events if e.correlation_id == corr]
    promoted = next((e for e in chain if e.type == "ModelPromoted"), None)
    deployed = next((e for e in chain if e.type == "ModelDeployed"), None)
    run = next((r for r in runs if r.correlation_id == corr), None)
    detect = (seconds_or_none(drift.occurred_at) or 0) - ep.t0
    # why: the monitor must see a window of drifted rows before it can decide; the time to fill
    # it (up to the window's last row) is sample accumulation, not platform overhead
    window_end = seconds_or_none(drift.drift_detected.window_end) or 0
    window_fill = max(0.0, min(detect, window_end - ep.t0))
    row.update(
        closed=True,
        correlation_id=corr,
        detect_s=detect,
        window_fill_s=window_fill,
        serving_s=ep.serving_at - ep.t0,
        promote_s=(seconds_or_none(promoted.occurred_at) or 0) - ep.t0 if promoted else None,
        deployed_s=(seconds_or_none(deployed.occurred_at) or 0) - ep.t0 if deployed else None,
    )
    if run is not None:
        row.update(
            train_start_s=(seconds_or_none(run.started_at) or 0) - ep.t0,
            data_wait_s=run.data_wait_seconds,
            fit_s=run.fit_seconds,
        )
        row["overhead_s"] = row["serving_s"] - window_fill - run.data_wait_seconds - run.fit_seconds
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))], 3)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    closed = [r for r in rows if r.get("closed")]
    out: dict[str, Any] = {}
    for key, _ in KEYS:
        values = [r[key] for r in closed if r.get(key) is not None]
        out[f"median_{key}"] = round(statistics.median(values), 3) if values else None
        out[f"p90_{key}"] = _pct(values, 0.9)
    return out


async def _run(common: Any, episodes: int, rate: int, workers: int, settle: float) -> dict:
    from driftloop.protos.training.v1 import training_pb2, training_pb2_grpc
    from driftloop.shared.cli.bench.loop_driver import LoopDriver

    async with LoopDriver(common, rate, workers) as driver:
        await driver.first_version(2000)
        driver.start_traffic()
        await driver.settle(settle)
        baseline_rate = driver.traffic.rate()
        done = []
        for i in range(episodes):
            shift = 2.0 if i % 2 == 0 else 0.0  # +2, back to 0, +2 ...: the boundary follows
            done.append(await driver.episode(i, shift, timeout=180))
            if done[-1].serving_at is None:
                break  # the loop did not close: later episodes would measure nothing
            await driver.settle(settle)
        await driver.stop_traffic()
        stub = training_pb2_grpc.TrainingServiceStub(driver._channels["training"])
        runs = (await stub.ListRuns(training_pb2.ListRunsRequest(model=driver.name))).runs
        rows = [measure(ep, driver.events, list(runs)) for ep in done]
        chains = []
        for row in rows:
            if row.get("closed"):
                chains.append(await asyncio.to_thread(_trace, common, row["correlation_id"]))
                row["trace_complete"] = chains[-1]["complete"]
        return {
            "model": driver.name,
            "rows": rows,
            "target_rate": rate,
            "achieved_rate": round(driver.traffic.rate(), 1),
            "baseline_rate": round(baseline_rate, 1),
            "failed_requests": driver.traffic.failed,
            "chains": chains,
        }


def _trace(common: Any, correlation_id: str) -> dict[str, Any]:
    from driftloop.shared.cli.commands.trace import gather
    from driftloop.shared.cli.commands.trace_chain import build_chain

    return build_chain(gather(common, correlation_id, []))


def start_stack(data_dir: Path, kafka: str = "") -> tuple[Any, subprocess.Popen[bytes]]:
    """`driftloop up` (`up --kafka KAFKA` when `kafka` names a broker) on `data_dir` and free
    ports, in its own session; returns once healthy. Until `stop_stack`, a SIGTERM to this
    process raises SystemExit, so the caller's `finally: stop_stack(proc)` runs."""
    from driftloop.shared.cli.chaos.infra import start_stack as start

    _exit_on_sigterm()
    try:
        common, proc = start(data_dir, kafka=kafka)  # stops what it started if it fails
    except BaseException:
        _restore_sigterm()
        raise
    return common, proc


def stop_stack(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `up`'s group (it stops its services), SIGKILL after a minute."""
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    finally:
        _restore_sigterm()


_previous_sigterm: list[Any] = []


def _exit_on_sigterm() -> None:
    """why: the stack runs in its own session, so a SIGTERM to the bench does not reach it, and
    Python's default SIGTERM ends the bench without running its `finally` (Ctrl-C does run
    it): the stack and its services were left running."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    _previous_sigterm.append(signal.signal(signal.SIGTERM, leave))


def _restore_sigterm() -> None:
    if _previous_sigterm and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _previous_sigterm.pop())


def _render(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"the loop under {report['achieved_rate']} req/s (seconds after drift)")
    table.add_column("ep", justify="right")
    table.add_column("v", justify="right")
    for _, label in KEYS:
        table.add_column(label, justify="right")
    table.add_column("trace")

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.2f}"

    for r in report["rows"]:
        if not r.get("closed"):
            table.add_row(str(r["episode"]), "-", "open", *[""] * len(KEYS))
            continue
        trace = "complete" if r.get("trace_complete") else "incomplete"
        table.add_row(str(r["episode"]), r["version"], *[cell(r.get(k)) for k, _ in KEYS], trace)
    s = report["summary"]
    for stat in ("median", "p90"):
        table.add_row(stat, "", *[cell(s.get(f"{stat}_{k}")) for k, _ in KEYS], "")
    console.print(table)
    console.print(
        f"{report['episodes_closed']}/{report['episodes']} episodes closed; traffic target "
        f"{report['target_rate']} req/s, achieved {report['achieved_rate']} req/s "
        f"(single-row requests, {report['failed_requests']} failed); overhead = new version "
        "answering minus detection-window fill, post-drift data wait and fit"
    )


def command(
    json_out: bool = typer.Option(False, "--json", help="End with one JSON object."),
    episodes: int = typer.Option(5, help="Drift episodes, one after another."),
    rate: int = typer.Option(500, help="Target prediction requests per second (single rows)."),
    workers: int = typer.Option(8, help="Concurrent request tasks."),
    settle: float = typer.Option(5.0, help="Seconds of steady traffic between episodes."),
    quick: bool = typer.Option(False, "--quick", help="One episode at 200 req/s (development)."),
    broker: str = typer.Option("embedded", "--broker", help=BROKER_HELP),
) -> None:
    """Drift -> retrain -> promote -> serve, timed per episode under steady traffic."""
    from rich.console import Console

    from driftloop.shared.cli.bench.brokers import brokers_of, local_kafka

    console = Console()
    names = brokers_of(broker)
    if quick:
        episodes, rate = 1, 200
    root = Path(tempfile.mkdtemp(prefix="driftloop-bench-loop-"))
    reports = {}

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    for name in names:
        data_dir = root / name if len(names) > 1 else root
        with local_kafka(data_dir / "kafka", say) if name == "kafka" else nullcontext() as kafka:
            console.print(f"starting the stack on the {LABELS[name]} broker in {data_dir}")
            reports[name] = measure_on(
                kafka.bootstrap if kafka else "", data_dir, episodes, rate, workers, settle
            )
        _report(console, reports[name])
    out = reports[names[0]] if len(names) == 1 else _side_by_side(console, reports, root)
    if json_out:
        console.print(json.dumps(out), soft_wrap=True, highlight=False, markup=False)
    if any(r["episodes_closed"] < episodes for r in reports.values()):
        raise typer.Exit(1)


def measure_on(
    kafka: str, data_dir: Path, episodes: int, rate: int, workers: int, settle: float
) -> dict[str, Any]:
    """One run on a fresh stack (on the Kafka at `kafka`, else the embedded broker); the report
    (the last episode's trace chain under "chains")."""
    common, proc = start_stack(data_dir, kafka)
    try:
        report = asyncio.run(_run(common, episodes, rate, workers, settle))
    finally:
        stop_stack(proc)
    rows = report["rows"]
    closed = [r for r in rows if r.get("closed")]
    report.update(
        episodes=episodes,
        episodes_closed=len(closed),
        traces_complete=sum(bool(r.get("trace_complete")) for r in closed),
        summary=summarise(rows),
    )
    s = report["summary"]
    report.update(
        median_drift_to_serving_s=s["median_serving_s"],
        p90_drift_to_serving_s=s["p90_serving_s"],
        median_overhead_s=s["median_overhead_s"],
    )
    return report


def _report(console: Any, report: dict[str, Any]) -> None:
    chains = report.pop("chains")
    _render(console, report)
    if chains:
        from driftloop.shared.cli.commands.trace import render

        console.print("the last episode as `driftloop trace` shows it:")
        render(chains[-1], console)


CEILING_MESSAGES = 10_000
"""Raw-ceiling messages the size of one label feed of the bench (250 rows, a raw record batch)."""


def _side_by_side(console: Any, reports: dict[str, dict[str, Any]], root: Path) -> dict[str, Any]:
    """Both brokers' episode timings in one table, with each broker's raw ceiling."""
    import numpy as np
    import pyarrow as pa

    from driftloop.shared.cli.bench import brokers
    from driftloop.shared.cli.commands.demo_data import make_rows

    frame = make_rows(250, rng=np.random.default_rng(7))
    payload = brokers.record_batch_message(pa.Table.from_pandas(frame, preserve_index=False))
    ceilings = brokers.ceilings(payload, CEILING_MESSAGES, root)
    e, k = reports["embedded"], reports["kafka"]
    figures: list[tuple[str, Any, Any]] = [
        ("episodes closed", e["episodes_closed"], k["episodes_closed"]),
        ("achieved req/s", e["achieved_rate"], k["achieved_rate"]),
        ("failed requests", e["failed_requests"], k["failed_requests"]),
    ]
    for key, label in KEYS:
        figures.append(
            (f"median {label} s", e["summary"][f"median_{key}"], k["summary"][f"median_{key}"])
        )
    figures.append(("p90 answers s", e["p90_drift_to_serving_s"], k["p90_drift_to_serving_s"]))
    figures += brokers.ceiling_rows(ceilings)
    brokers.render_side_by_side(console, "the loop, seconds after drift", figures)
    return {"broker": "both", **reports, "raw_ceiling": ceilings, **brokers.machine()}
