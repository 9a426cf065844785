"""`driftloop runs [MODEL]` (training runs with state and progress) and the reproduction check
behind `driftloop train --reproduce MODEL:VERSION`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.table import Table

from driftloop.protos.training.v1 import training_pb2, training_pb2_grpc
from driftloop.shared.cli.output import as_dict

console = Console()
err = Console(stderr=True)


def _training(data_dir: Path | None, method: str, request: Any, timeout: float = 15) -> Any:
    from driftloop.shared.cli.app import rpc_error, settings
    from driftloop.shared.grpc.client import sync_channel

    with sync_channel(settings(data_dir), "training") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        try:
            return getattr(stub, method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            rpc_error(exc)


def _at(ts: Any) -> str:
    nanos = ts.ToNanoseconds()
    return datetime.fromtimestamp(nanos / 1e9, UTC).strftime("%H:%M:%S") if nanos else "-"


def render_runs(runs: list[training_pb2.Run]) -> None:
    table = Table(title="training runs (newest first)")
    for col in ("run", "model", "trigger", "spec", "state", "progress", "queued", "wait s"):
        table.add_column(col)
    table.add_column("fit s")
    table.add_column("version")
    for r in runs:
        decided = r.outcome or ("promoted" if r.promoted else "not promoted")
        outcome = r.registered_version and f"{r.registered_version} ({decided})"
        table.add_row(
            r.run_id[:12],
            r.model,
            r.trigger + (f" #{r.attempt}" if r.attempt > 1 else ""),
            f"v{r.spec_version}" if r.spec_version else "-",
            r.state,
            r.progress or (r.error[:60] if r.state in ("failed", "cancelled") else ""),
            _at(r.created_at),
            f"{r.data_wait_seconds:.1f}" if r.data_wait_seconds else "",
            f"{r.fit_seconds:.2f}" if r.fit_seconds else "",
            outcome or "-",
        )
    console.print(table)


def reproduce(target: str, data_dir: Path | None) -> int:
    """Ask training to retrain MODEL:VERSION and compare; 0 when it matches, 1 otherwise."""
    model, _, version = target.rpartition(":")
    if not model or not version:
        err.print(f"[red]error:[/red] --reproduce takes MODEL:VERSION, got {target!r}")
        return 2
    request = training_pb2.ReproduceRequest(model=model, version=version)
    report = _training(data_dir, "Reproduce", request, timeout=600)
    spec = f", spec v{report.spec_version}" if report.spec_version else ""
    table = Table(
        title=f"reproducing {model} version {version} (manifest v{report.manifest_version}{spec})"
    )
    for col in ("metric", "recorded", "reproduced"):
        table.add_column(col)
    for name in sorted(set(report.recorded_metrics) | set(report.reproduced_metrics)):
        table.add_row(
            name,
            f"{report.recorded_metrics.get(name, float('nan')):.6f}",
            f"{report.reproduced_metrics.get(name, float('nan')):.6f}",
        )
    console.print(table)
    console.print(
        f"holdout predictions: {report.holdout_rows - report.prediction_mismatches} of "
        f"{report.holdout_rows} identical"
    )
    for name, change in sorted(report.library_versions.items()):
        console.print(f"[yellow]library changed since training[/yellow]: {name} {change}")
    if report.matched:
        console.print("[green]reproduced: same metrics and the same predictions[/green]")
        return 0
    for line in report.differences:
        err.print(f"[red]differs:[/red] {line}")
    return 1


def register(app: typer.Typer) -> None:
    @app.command()
    def runs(
        model: Annotated[str, typer.Argument(help="Only this model's runs.")] = "",
        limit: Annotated[int, typer.Option(help="At most this many.")] = 20,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        data_dir: Annotated[
            Path | None, typer.Option("--data-dir", help="State directory.")
        ] = None,
    ) -> None:
        """Training runs with their state and progress (newest first)."""
        reply = _training(
            data_dir, "ListRuns", training_pb2.ListRunsRequest(model=model, limit=limit)
        )
        if as_json:
            rows = [as_dict(r, with_defaults=False) for r in reply.runs]
            console.print(json.dumps(rows), soft_wrap=True, highlight=False, markup=False)
        else:
            render_runs(list(reply.runs))
