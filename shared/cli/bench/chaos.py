"""`driftloop bench chaos [--json] [--quick] [--store s3|local] [--fault NAME ...]`: the fault
matrix against a real embedded stack; per fault: injected, loop closed, rows in / curated /
rejected / lost, duplicates, recovery seconds, and the fault's own checks."""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

SETUP_ROWS = 1100
"""Rows ingested before the first fault: enough for the automatic first training run."""


def run_matrix(
    faults: list[str],
    *,
    store: str = "local",
    rows: int = 500,
    outage_s: float = 8.0,
    data_dir: Path | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Start a stack, run `faults` in order, stop it; the report (rows and totals)."""
    from driftloop.shared.cli.chaos.faults import Chaos, run_fault
    from driftloop.shared.cli.chaos.harness import Harness
    from driftloop.shared.cli.chaos.infra import MotoS3, start_stack, stop_stack
    from driftloop.shared.s3 import open_object_store

    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="driftloop-chaos-"))
    s3 = MotoS3() if store == "s3" else None
    say = progress or (lambda text: None)
    try:
        started = time.monotonic()
        common, proc = start_stack(data_dir, s3.settings(direct=False) if s3 else None)
        say(f"stack healthy in {time.monotonic() - started:.1f}s ({data_dir}, store {store})")
        observer = common.model_copy(update={"s3": s3.settings(direct=True)}) if s3 else common
        harness = Harness(common, open_object_store(observer), f"chaos-{secrets.token_hex(2)}")
        rows_out = []
        try:
            first = harness.setup(SETUP_ROWS)
            say(f"model {harness.model}: version {first} serving")
            chaos = Chaos(harness, rows, outage_s=outage_s, s3=s3)
            for name in faults:
                if name == "object_store_outage" and s3 is None:
                    continue
                row = run_fault(chaos, name)
                rows_out.append(row)
                say(
                    f"{name}: {'survived' if row.survived else 'FAILED'} "
                    f"(lost {row.lost}, duplicates {row.duplicates}, loop "
                    f"{'closed' if row.loop_closed else 'open'}) {row.note}"
                )
            twice = sum(n > 1 for n in harness.versions_by_run().values())
        finally:
            harness.close()
            code = stop_stack(proc)
    finally:
        if s3 is not None:
            s3.stop()
    report = summarise([r.to_json() for r in rows_out])
    report.update(
        store=store,
        model=harness.model,
        rows_per_fault=rows,
        versions_registered_twice=twice,
        stack_exit_code=code,
        data_dir=str(data_dir),
    )
    return report


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "faults": rows,
        "faults_total": len(rows),
        "faults_survived": sum(bool(r["survived"]) for r in rows),
        "records_in": sum(r["records_in"] for r in rows),
        "records_curated": sum(r["curated"] for r in rows),
        "records_rejected": sum(r["rejected"] for r in rows),
        "records_lost": sum(r["lost"] for r in rows),
        "duplicates": sum(r["duplicates"] for r in rows),
    }


def render(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"chaos matrix (store: {report['store']})")
    for col in ("fault", "injected", "loop", "in", "curated", "rejected", "lost", "dup"):
        table.add_column(col, justify="right" if col in ("in", "curated") else "left")
    table.add_column("recovery s", justify="right")
    table.add_column("checks")
    for r in report["faults"]:
        checks = ", ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in r["checks"].items())
        table.add_row(
            r["info"].get("label", r["fault"]),
            "yes" if r["injected"] else "no",
            "closed" if r["loop_closed"] else "[red]open[/red]",
            str(r["records_in"]),
            str(r["curated"]),
            str(r["rejected"]),
            str(r["lost"]),
            str(r["duplicates"]),
            "-" if r["recovery_s"] is None else f"{r['recovery_s']:.1f}",
            checks or "-",
        )
    console.print(table)
    console.print(
        f"{report['faults_survived']}/{report['faults_total']} faults survived; "
        f"records in {report['records_in']}, curated {report['records_curated']}, rejected "
        f"{report['records_rejected']}, lost {report['records_lost']}, duplicates "
        f"{report['duplicates']}; versions registered twice: {report['versions_registered_twice']}"
    )
    for r in report["faults"]:
        if r["note"] or len(r["info"]) > 1:
            extra = {k: v for k, v in r["info"].items() if k != "label"}
            console.print(f"  {r['fault']}: {r['note']} {extra if extra else ''}", markup=False)


ALL = (
    "kill_ingestion",
    "kill_validation",
    "kill_training",
    "kill_registry",
    "kill_serving",
    "kill_monitoring",
    "broker_restart",
    "object_store_outage",
    "tampered_artifact",
    "warmup_failure",
    "poison",
    "backlog",
    "duplicated_episode",
    "oversized_request",
    "many_inputs",
)


def command(
    json_out: bool = typer.Option(False, "--json", help="End with one JSON object."),
    quick: bool = typer.Option(
        False, "--quick", help="200 rows per fault and a 4 s outage (development)."
    ),
    store: str = typer.Option(
        "s3",
        help="s3: moto's S3 server behind a cuttable proxy (the outage row is real); "
        "local: a directory (no outage row).",
    ),
    fault: Annotated[
        list[str] | None, typer.Option(help=f"Only these faults (default all): {', '.join(ALL)}.")
    ] = None,
    rows: int = typer.Option(600, help="Rows ingested during each fault."),
) -> None:
    """Kill, cut off, tamper with and flood the running loop; count what survives."""
    from rich.console import Console

    console = Console()
    fault = fault or []
    unknown = sorted(set(fault) - set(ALL))
    if unknown or store not in ("s3", "local"):
        console.print(f"[red]unknown fault(s) {unknown} or store {store!r}[/red]")
        raise typer.Exit(2)
    if quick:
        rows = 200
    report = run_matrix(
        list(fault) or list(ALL),
        store=store,
        rows=rows,
        outage_s=4.0 if quick else 8.0,
        progress=lambda text: console.print(text, markup=False, highlight=False),
    )
    render(console, report)
    if json_out:
        console.print(json.dumps(report), soft_wrap=True, highlight=False, markup=False)
    if report["faults_survived"] < report["faults_total"]:
        raise typer.Exit(1)
