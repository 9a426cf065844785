"""`driftloop bench recovery`: does the loop recover from ordinary drift, and leave alone the shifts
that do not hurt? Labelled streams run at once on the embedded stack, one model each, labels late;
each moderate drift is set against a reference model fit on post-drift rows (recovery_metrics.py).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from driftloop.shared.cli.bench.recovery_streams import Shape, Stream

QUICK_ROWS = 4000
QUICK_RATE = 80.0


@dataclass(frozen=True)
class Plan:
    streams: tuple[str, ...]
    shape: Shape
    rate: float
    """Rows per second per stream."""
    label_delay: int


def make_plan(quick: bool, rows_per_stream: int, rate: float, label_delay: int) -> Plan:
    """The streams and their lengths: drift a quarter in (at least 500 rows), transitions of at
    most 1000 rows, pools of 12,000 independent rows per regime (6,000 with --quick)."""
    from driftloop.shared.cli.bench.recovery_streams import QUICK_RECIPES, RECIPES, Shape

    rows = min(rows_per_stream, QUICK_ROWS) if quick else rows_per_stream
    rate = QUICK_RATE if quick else rate
    if rows < 2000:
        raise typer.BadParameter("at least 2000 rows per stream", param_hint="--rows-per-stream")
    drift_row = max(500, rows // 4)
    shape = Shape(
        train_rows=2000,
        live_rows=rows,
        drift_row=drift_row,
        transition_rows=min(1000, max(200, (rows - drift_row) // 6)),
        pool_rows=6000 if quick else 12_000,
    )
    names = QUICK_RECIPES if quick else tuple(r.name for r in RECIPES)
    return Plan(names, shape, rate, label_delay)


def command(
    json_out: bool = typer.Option(False, "--json", help="End with one JSON object."),
    seed: int = typer.Option(0, help="Seed of every generated stream."),
    rows_per_stream: int = typer.Option(8000, help="Live rows sent per stream."),
    rate: float = typer.Option(50.0, help="Live rows per second per stream (10-row requests)."),
    label_delay: int = typer.Option(300, help="Rows between a prediction and its label."),
    quick: bool = typer.Option(
        False,
        "--quick",
        help=f"Three streams of {QUICK_ROWS} rows at {QUICK_RATE:g} rows/s (development, tests).",
    ),
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the embedded stack keeps its state (default: a new temp dir)."),
    ] = None,
    windows: bool = typer.Option(
        False,
        "--windows",
        help="Offline, no stack: which rows to train on after a drift (post-drift only, all "
        "recent rows, recency-weighted), scored on the drifted streams.",
    ),
    detection: bool = typer.Option(
        False,
        "--detection",
        help="Offline, no stack: replay each stream through the monitor (version 1 trained as "
        "training does, labels --label-delay rows late) and report where it decides.",
    ),
) -> None:
    """Moderate, gradual, incremental, harmless and no drift: recovery against a reference."""
    from rich.console import Console

    from driftloop.shared.cli.bench import recovery_streams
    from driftloop.shared.cli.bench.loop import start_stack, stop_stack
    from driftloop.shared.cli.bench.recovery_metrics import model_spec
    from driftloop.shared.cli.bench.recovery_render import calibration_table, render

    console = Console()
    plan = make_plan(quick, rows_per_stream, rate, label_delay)
    streams = recovery_streams.streams(plan.streams, plan.shape, seed, model_spec(()))
    console.print(calibration_table(streams))
    if windows:
        _windows(console, streams, json_out)
        return
    if detection:
        _detection(console, streams, plan, json_out)
        return
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="driftloop-bench-recovery-"))
    console.print(f"starting the embedded stack in {data_dir}")
    common, proc = start_stack(data_dir)
    try:
        driver, records, declared = asyncio.run(_run(common, streams, plan))
    finally:
        stop_stack(proc)
    report = score(common, driver, records, declared, plan)
    report["settings"] = {
        "seed": seed,
        "quick": quick,
        "rows_per_stream": plan.shape.live_rows,
        "drift_row": plan.shape.drift_row,
        "transition_rows": plan.shape.transition_rows,
        "rate_rows_per_s": plan.rate,
        "label_delay_rows": label_delay,
        **report.pop("spec"),
    }
    report["calibration"] = [_calibration(s) for s in streams]
    render(console, report)
    if json_out:
        print(json.dumps(report))  # noqa: T201 - the benchmark's machine-readable last line


def _windows(console: Any, streams: list[Stream], json_out: bool) -> None:
    from rich.table import Table

    from driftloop.shared.cli.bench.recovery_windows import WAYS, compare_windows, summary

    found = compare_windows(streams)
    table = Table(title="training window after a drift: accuracy on the new regime")
    for col in ("stream", "kind", "post-drift rows", *WAYS):
        table.add_column(col)
    for r in found:
        best = max(WAYS, key=lambda w: r[w])
        table.add_row(
            r["stream"],
            r["kind"],
            str(r["rows"]),
            *(f"[bold]{r[w]:.3f}[/bold]" if w == best else f"{r[w]:.3f}" for w in WAYS),
        )
    console.print(table)
    result = summary(found)
    console.print(f"mean accuracy by rows: {result['mean_accuracy_by_rows']}")
    console.print(f"best: {result['best_count']}")
    if json_out:
        print(json.dumps({"windows": found, **result}))  # noqa: T201 - machine-readable line


def _detection(console: Any, streams: list[Stream], plan: Plan, json_out: bool) -> None:
    from rich.table import Table

    from driftloop.services.monitoring.settings import MonitoringSettings
    from driftloop.shared.cli.bench import recovery_detection as d

    found = d.replay_detection(
        streams, MonitoringSettings().policy(), label_delay=plan.label_delay, rate=plan.rate
    )
    table = Table(title="monitoring replayed offline: where it decides (rows from the drift)")
    for col in d.COLUMNS:
        table.add_column(col)
    for row in d.table_rows(found):
        table.add_row(*row)
    console.print(table)
    result = d.summary(found)
    console.print(result)
    if json_out:
        print(json.dumps({"detection": found, **result}))  # noqa: T201 - machine-readable line


async def _run(common: Any, streams: list[Stream], plan: Plan) -> tuple[Any, Any, Any]:
    from driftloop.shared.cli.bench.recovery_driver import RecoveryDriver

    async with RecoveryDriver(
        common, streams, rate=plan.rate, label_delay=plan.label_delay
    ) as driver:
        declared = await driver.declare()
        await driver.first_versions(timeout=300)
        await driver.run()
        records = await driver.records()
    return driver, records, declared


def score(common: Any, driver: Any, records: dict[str, Any], declared: Any, plan: Plan) -> dict:
    """Offline, the stack stopped: load every version from the object store, judge each
    production change, build the reference ladders, one report per stream and the summary."""
    import numpy as np

    from driftloop.shared.cli.bench import recovery_metrics as m
    from driftloop.shared.cli.bench.recovery_driver import load_versions, predictions
    from driftloop.shared.cli.bench.recovery_report import stream_report, summarise
    from driftloop.shared.cli.bench.recovery_streams import MODERATE_KINDS

    rows = []
    spec = None
    for stream in driver.streams:
        features = list(stream.features)
        spec = m.model_spec(features, declared)
        served = driver.served[stream.name]
        pipelines = load_versions(common, records[stream.name])
        truth = stream.live[m.TARGET].to_numpy()
        correct = [p == t for p, t in zip(served.predictions, truth, strict=True)]
        judged = []
        for change in m.switches(served.versions):
            part = slice(change.row, change.end)
            old = pipelines.get(change.previous)
            old_correct = (
                None if old is None else predictions(old, stream.live.iloc[part]) == truth[part]
            )
            judged.append(m.judge(change, np.array(correct[part]), old_correct))
        ladder = None
        if stream.kind in MODERATE_KINDS:
            ladder = m.build_ladder(stream.after, stream.live, features, spec, m.LADDER)
        report = stream_report(
            stream,
            served,
            records[stream.name],
            judged,
            ladder,
            driver.traffic_started,
            plan.label_delay,
        )
        rows.append({"model": driver.models[stream.name], **report})
    return {
        **summarise(rows),
        "streams": rows,
        "spec": {
            "estimator": getattr(spec, "estimator", ""),
            "window_rows": getattr(spec, "window_rows", 0),
            "holdout_fraction": getattr(spec, "holdout_fraction", 0.0),
        },
    }


def _calibration(stream: Stream) -> dict[str, Any]:
    c = stream.calibration
    found: dict[str, Any] = {"stream": stream.name, "kind": stream.kind, "seed": stream.seed}
    if c is not None:
        found.update(
            error_before=round(c.error_before, 4),
            error_after=round(c.error_after, 4),
            rise=round(c.rise, 4),
            reference_error=round(c.reference_error, 4),
            ok=c.ok,
            magnitude=c.magnitude,
        )
    return found
