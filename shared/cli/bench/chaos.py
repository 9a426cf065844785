"""`driftloop bench chaos [--json] [--quick] [--store s3|local] [--fault NAME ...] [--broker
embedded|kafka|both]`: the fault matrix against a real stack, on the embedded broker or on
Apache Kafka; per fault: injected, loop closed, rows in / curated / rejected / lost, duplicates,
recovery seconds, and the fault's own checks."""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from driftloop.shared.cli.bench.brokers import HELP as BROKER_HELP

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
    broker: str = "embedded",
) -> dict[str, Any]:
    """Start a stack (on the embedded broker, or with broker="kafka" on a local Apache Kafka
    broker started for the run), run `faults` in order, stop it; the report (rows and totals)."""
    from driftloop.shared.cli.bench.brokers import local_kafka

    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="driftloop-chaos-"))
    say = progress or (lambda text: None)
    if broker == "embedded":
        return _matrix(faults, store, rows, outage_s, data_dir, say, None)
    with local_kafka(data_dir / "kafka", say) as kafka:
        return _matrix(faults, store, rows, outage_s, data_dir, say, kafka)


def _matrix(
    faults: list[str],
    store: str,
    rows: int,
    outage_s: float,
    data_dir: Path,
    say: Any,
    kafka: Any,
) -> dict[str, Any]:
    from driftloop.shared.cli.chaos.faults import Chaos, run_fault
    from driftloop.shared.cli.chaos.harness import Harness
    from driftloop.shared.cli.chaos.infra import MotoS3, start_stack, stop_stack
    from driftloop.shared.s3 import open_object_store

    s3 = MotoS3() if store == "s3" else None
    try:
        started = time.monotonic()
        common, proc = start_stack(
            data_dir,
            s3.settings(direct=False) if s3 else None,
            kafka=kafka.bootstrap if kafka else "",
        )
        say(f"stack healthy in {time.monotonic() - started:.1f}s ({data_dir}, store {store})")
        observer = common.model_copy(update={"s3": s3.settings(direct=True)}) if s3 else common
        harness = Harness(common, open_object_store(observer), f"chaos-{secrets.token_hex(2)}")
        rows_out = []
        try:
            first = harness.setup(SETUP_ROWS)
            say(f"model {harness.model}: version {first} serving")
            chaos = Chaos(harness, rows, outage_s=outage_s, s3=s3, kafka=kafka)
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


def render(console: Any, report: dict[str, Any], broker: str = "embedded") -> None:
    from rich.table import Table

    from driftloop.shared.cli.bench.brokers import LABELS

    table = Table(title=f"chaos matrix (broker: {LABELS[broker]}, store: {report['store']})")
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
    broker: str = typer.Option("embedded", "--broker", help=BROKER_HELP),
) -> None:
    """Kill, cut off, tamper with and flood the running loop; count what survives."""
    from rich.console import Console

    from driftloop.shared.cli.bench.brokers import brokers_of

    console = Console()
    fault = fault or []
    unknown = sorted(set(fault) - set(ALL))
    if unknown or store not in ("s3", "local"):
        console.print(f"[red]unknown fault(s) {unknown} or store {store!r}[/red]")
        raise typer.Exit(2)
    names = brokers_of(broker)
    if quick:
        rows = 200
    root = Path(tempfile.mkdtemp(prefix="driftloop-chaos-"))
    reports = {}
    for name in names:
        reports[name] = run_matrix(
            list(fault) or list(ALL),
            store=store,
            rows=rows,
            outage_s=4.0 if quick else 8.0,
            data_dir=root / name if len(names) > 1 else root,
            progress=lambda text: console.print(text, markup=False, highlight=False),
            broker=name,
        )
        render(console, reports[name], name)
    if len(names) == 1:
        out = reports[names[0]]
    else:
        out = _side_by_side(console, reports, rows, root)
    if json_out:
        console.print(json.dumps(out), soft_wrap=True, highlight=False, markup=False)
    if any(r["faults_survived"] < r["faults_total"] for r in reports.values()):
        raise typer.Exit(1)


def _side_by_side(
    console: Any, reports: dict[str, dict[str, Any]], rows: int, root: Path
) -> dict[str, Any]:
    """Both brokers' totals in one table, with each broker's raw ceiling for messages the size
    of one of the harness's ingest requests."""
    from driftloop.shared.cli.bench import brokers

    ceilings = brokers.ceilings(request_payload(), CEILING_MESSAGES, root)
    e, k = reports["embedded"], reports["kafka"]
    figures = [
        (label, e[key], k[key])
        for label, key in (
            ("faults survived", "faults_survived"),
            ("faults run", "faults_total"),
            ("records in", "records_in"),
            ("records curated", "records_curated"),
            ("records rejected", "records_rejected"),
            ("records lost", "records_lost"),
            ("duplicates", "duplicates"),
            ("versions registered twice", "versions_registered_twice"),
        )
    ]
    restart = {n: _row(r, "broker_restart") for n, r in reports.items()}
    figures.append(
        (
            "broker restart: lost / recovery s",
            _restart_cell(restart["embedded"]),
            _restart_cell(restart["kafka"]),
        )
    )
    figures += brokers.ceiling_rows(ceilings)
    brokers.render_side_by_side(console, f"chaos matrix, {rows} rows per fault", figures)
    return {"broker": "both", **reports, "raw_ceiling": ceilings, **brokers.machine()}


CEILING_MESSAGES = 10_000
"""Raw-ceiling messages of the size of one ingest request (250 rows as a raw record batch)."""


def request_payload() -> bytes:
    """One ingest request of the harness as the raw topic carries it (250 rows)."""
    import numpy as np
    import pyarrow as pa

    from driftloop.shared.cli.bench.brokers import record_batch_message
    from driftloop.shared.cli.chaos.harness import REQUEST_ROWS, SEGMENTS

    rng = np.random.default_rng(7)
    table = pa.table(
        {
            "row_id": [f"r{i:08d}" for i in range(REQUEST_ROWS)],
            "x0": rng.normal(size=REQUEST_ROWS),
            "x1": rng.normal(size=REQUEST_ROWS),
            "segment": rng.choice(SEGMENTS, REQUEST_ROWS),
            "label": rng.choice(["0", "1"], REQUEST_ROWS),
        }
    )
    return record_batch_message(table)


def _row(report: dict[str, Any], fault: str) -> dict[str, Any] | None:
    return next((r for r in report["faults"] if r["fault"] == fault), None)


def _restart_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    recovery = "-" if row["recovery_s"] is None else f"{row['recovery_s']:.1f}"
    return f"{row['lost']} / {recovery}"
