"""`driftloop bench fleet [--partitions P] [--json]`: a fleet of per-route regressors on the
embedded stack, with serving's model memory set so that at most a fifth of the partition models
fit; roadworks drift 5% of the routes, then a city-wide weather shift drifts them all. Reports
detections, false retrains, seconds from drift to a new version answering, MAE against the
post-drift reference, hot and cold latencies, model loads and evictions, peak memory, runs/min.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import tempfile
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from driftloop.shared.cli.bench.fleet_driver import Plan

SERVING_MEMORY_ENV = "DRIFTLOOP_SERVING_MODEL_MEMORY_MB"
AUTO_TRAIN_ENV = "DRIFTLOOP_TRAINING_AUTO_TRAIN_MIN_ROWS"
"""Set to the warm-up's rows: the fleet's first run then starts once every route has them (an
explicit StartRun raced training's own first run, and the fleet was trained twice)."""
METRIC_WORDS = ("load", "evict", "hit", "miss", "resident", "memory", "cache")
"""Serving's Prometheus families reported (the lazy model cache's)."""
DEFAULT_PARAMS = {"gradient_boosting": (("max_iter", "30"),)}
"""Parameters of an estimator when no --param is given: 30 boosting iterations fit a route's
window of 320 rows in ~40 ms (the default 100 in ~90 ms), for a median route MAE of 25.8 s
against 24.7 s on this stream."""
COUNTED = ("_total", "_count", "_sum")
"""Samples that count up (reported as the live phase's increase; the others as they end)."""


def command(
    json_out: bool = typer.Option(False, "--json", help="End with one JSON object."),
    partitions: int = typer.Option(100, min=2, help="Routes: partition models of the fleet."),
    rows_per_route: int = typer.Option(20, min=2, help="Rows of every route in one block."),
    warmup_blocks: int = typer.Option(20, min=1, help="Blocks ingested before the fleet trains."),
    before_blocks: int = typer.Option(5, min=1, help="Live blocks before the roadworks."),
    after_blocks: int = typer.Option(
        5, min=1, help="Live blocks once every drifted partition serves a new version."
    ),
    phase_timeout: float = typer.Option(
        600.0, min=1.0, help="Seconds a drift phase may last before the bench moves on."
    ),
    weather: bool = typer.Option(True, help="Run the city-wide weather shift after the roadworks."),
    estimator: str = typer.Option("gradient_boosting", help="The fleet spec's estimator."),
    param: Annotated[
        list[str] | None, typer.Option(help="Estimator parameter NAME=JSON (repeatable).")
    ] = None,
    window_rows: int = typer.Option(400, min=10, help="The spec's window_rows (per partition)."),
    min_rows: int = typer.Option(200, min=1, help="The spec's min_rows (a partition's own model)."),
    workers: int = typer.Option(4, min=1, help="Concurrent request tasks."),
    rate: float = typer.Option(0.0, min=0.0, help="Live rows per second at most (0: no cap)."),
    memory_fraction: float = typer.Option(
        0.2, min=0.001, max=1.0, help="Share of the partition models serving's budget holds."
    ),
    seed: int = typer.Option(0, help="Seed of the stream."),
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the embedded stack keeps its state (default: a new temp dir)."),
    ] = None,
) -> None:
    """A fleet of per-route models: roadworks on 5% of routes, then a city-wide weather shift."""
    from rich.console import Console

    console = Console()

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    params = tuple(_param(p) for p in param) if param else DEFAULT_PARAMS.get(estimator, ())
    plan = Plan(
        partitions=partitions,
        rows_per_route=rows_per_route,
        warmup_blocks=warmup_blocks,
        before_blocks=before_blocks,
        after_blocks=after_blocks,
        phase_timeout_s=phase_timeout,
        weather=weather,
        estimator=estimator,
        params=params,
        window_rows=window_rows,
        min_rows=min_rows,
        workers=workers,
        rate=rate,
        seed=seed,
    )
    if min_rows > rows_per_route * warmup_blocks:
        raise typer.BadParameter(
            f"{warmup_blocks} warm-up blocks of {rows_per_route} rows per route never reach "
            f"min_rows {min_rows}: no partition would get its own model",
            param_hint="--min-rows",
        )
    plan, budget, sizes = sized(plan, memory_fraction, say)
    root = data_dir or Path(tempfile.mkdtemp(prefix="driftloop-bench-fleet-"))
    report = measure(plan, root, budget, say)
    report["settings"] = {
        **{k: v for k, v in dataclasses.asdict(plan).items() if k != "params"},
        "params": dict(plan.params),
        "serving_model_memory_mb": budget,
        "memory_fraction": memory_fraction,
        "partition_model_mb": sizes,
        "data_dir": str(root),
    }
    from driftloop.shared.cli.bench.fleet_render import render

    render(console, report)
    if json_out:
        print(json.dumps(report))  # noqa: T201 - the benchmark's machine-readable last line


def sized(plan: Plan, fraction: float, say: Any) -> tuple[Plan, float, dict[str, float]]:
    """The plan with its LRU capacity, serving's budget in MB, and a partition model's sizes."""
    from driftloop.shared.cli.bench.fleet_traffic import lru_capacity

    sizes = partition_model_mb(plan)
    budget = model_budget_mb(sizes, plan.partitions, fraction)
    capacity = lru_capacity(budget, sizes["serving_estimate_mb"])
    say(
        f"a partition model: {sizes['artifact_mb']:.3f} MB as an artifact, "
        f"{sizes['loaded_mb']:.3f} MB allocated when loaded, "
        f"{sizes['serving_estimate_mb']:.3f} MB by serving's estimate; serving's budget "
        f"{budget:.4f} MB holds {capacity} of {plan.partitions} partition models"
    )
    return dataclasses.replace(plan, lru_capacity=capacity), budget, sizes


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise typer.BadParameter(
            f"{text!r}: write NAME=JSON, e.g. max_iter=30", param_hint="--param"
        )
    return name, value


def reference_fit(plan: Plan) -> Any:
    """Fits what training fits with the bench's spec (its pipeline and estimator)."""
    from driftloop.services.training.core.domain import ModelSpec
    from driftloop.services.training.core.trainer import build_pipeline

    spec = ModelSpec(estimator=plan.estimator, params=dict(plan.params), task="regression")

    def fit(features: Any, target: Any) -> Any:
        return build_pipeline(features, list(features.columns), spec).fit(features, target)

    return fit


def train_rows(plan: Plan) -> int:
    """Rows a full window trains on once its holdout is set aside (trainer.split_holdout)."""
    return plan.window_rows - max(1, math.ceil(plan.window_rows * plan.holdout_fraction))


def partition_model_mb(plan: Plan) -> dict[str, float]:
    """One partition model as training builds it, fitted on a window of one route's rows: its
    artifact's size, the memory its loading allocates, and serving's own estimate of it (the
    one its budget counts: services/serving/core/model_cache.py)."""
    from driftloop.shared import artifacts
    from driftloop.shared.cli.bench.fleet_stream import TARGET
    from driftloop.shared.cli.bench.fleet_traffic import INPUTS

    rows = plan.stream().pool(0, "before", train_rows(plan))
    model = reference_fit(plan)(rows[list(INPUTS)], rows[TARGET].to_numpy())
    blob = artifacts.dump_model(model)
    digest = artifacts.sha256(blob)
    tracemalloc.start()
    loaded = artifacts.load_model(blob, digest)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "artifact_mb": len(blob) / 2**20,
        "loaded_mb": held / 2**20,
        "serving_estimate_mb": serving_estimate(loaded, digest, len(blob)) / 2**20,
    }


def serving_estimate(pipeline: Any, digest: str, size: int) -> int:
    """Bytes serving counts for this model against its budget: derived as serving derives its
    numeric form at load (an ONNX Runtime session costs more than the artifact)."""
    import structlog.testing

    from driftloop.services.serving.core import model_cache, numeric_form
    from driftloop.services.serving.core.slot import LoadedModel
    from driftloop.shared.artifacts import signature

    sig = signature(pipeline)
    with structlog.testing.capture_logs():  # serving's own log lines do not belong here
        numeric = numeric_form.derive(pipeline, sig, compiled=True)
    loaded = LoadedModel("bench/route_id=0", "1", pipeline, sig, digest, numeric, size)
    return int(model_cache.estimated_bytes(loaded))


def model_budget_mb(sizes: dict[str, float], partitions: int, fraction: float) -> float:
    """A budget that holds `fraction` of the partition models by serving's estimate of them."""
    whole = max(1, math.floor(partitions * fraction))
    return sizes["serving_estimate_mb"] * whole


def measure(plan: Plan, root: Path, budget: float, say: Any) -> dict[str, Any]:
    """Start the stack (serving's model memory set), drive it, stop it; the report."""
    from driftloop.shared.cli.bench.fleet_driver import warmup_rows
    from driftloop.shared.cli.bench.fleet_report import summarise
    from driftloop.shared.cli.bench.loop import start_stack, stop_stack

    say(f"starting the embedded stack in {root}")
    settings = {SERVING_MEMORY_ENV: repr(budget), AUTO_TRAIN_ENV: str(warmup_rows(plan))}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        common, proc = start_stack(root)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        rec, stack = asyncio.run(_drive(common, plan, say))
    finally:
        stop_stack(proc)
    say("scoring: the post-drift reference models and the per-partition errors")
    return {**summarise(rec, reference_fit(plan), train_rows(plan)), **stack}


async def _drive(common: Any, plan: Plan, say: Any) -> tuple[Any, dict[str, Any]]:
    from driftloop.shared.cli.bench.fleet_driver import FleetDriver

    pids_before = service_pids(common)
    async with FleetDriver(common, plan, say) as driver:
        await driver.warm_up(timeout=max(600.0, plan.partitions * 2.0))
        metrics_before = serving_metrics(common)
        await driver.live()
        metrics_after = serving_metrics(common)
    pids_after = service_pids(common)
    stack = {
        **peak_rss_mb(pids_after),
        "service_restarts": sorted(n for n, p in pids_before.items() if pids_after.get(n) != p),
        "serving_metrics": metrics_after,
        "serving_metrics_live": {
            k: round(v - metrics_before.get(k, 0.0), 3)
            for k, v in metrics_after.items()
            if k.endswith(COUNTED)
        },
    }
    return driver.rec, stack


def service_pids(common: Any) -> dict[str, int]:
    from driftloop.shared.cli.stack import embedded as stack

    found = stack.read_endpoints(common) or {}
    return {
        name: int(info["pid"])
        for name, info in (found.get("services") or {}).items()
        if info.get("pid")
    }


def peak_rss_mb(pids: dict[str, int]) -> dict[str, float | None]:
    """Peak resident memory (VmHWM) of serving, monitoring and training, with their children
    (serving's workers), in MiB."""
    return {
        f"{name}_rss_mb": _round_mb(sum(_hwm(p) for p in _family(pids[name])))
        if name in pids
        else None
        for name in ("serving", "monitoring", "training")
    }


def _round_mb(kib: int) -> float:
    return round(kib / 1024, 1)


def _family(pid: int) -> list[int]:
    found = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        found += _family(int(child))
    return found


def _hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def serving_metrics(common: Any) -> dict[str, float]:
    """Serving's model-cache metrics (families naming loads, evictions, hits, misses, resident
    models or memory), each sample summed over its labels."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{common.connect_host}:{common.ports.metrics('serving')}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - our own endpoint
            text = reply.read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("driftloop_serving") or not any(
            w in family.name for w in METRIC_WORDS
        ):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket")):
                continue
            found[sample.name] = found.get(sample.name, 0.0) + float(sample.value)
    return {k: round(v, 6) for k, v in sorted(found.items())}
