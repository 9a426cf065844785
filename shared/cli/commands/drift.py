"""`driftloop drift MODEL`: the monitor's current drift report and drift history, as tables,
as JSON (`--json`) or as one self-contained HTML page with distribution plots (`--html`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.table import Table

from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.shared.cli import output

console = Console()
err = Console(stderr=True)

TEST_NAMES = {
    "ks": "Kolmogorov-Smirnov",
    "chi2": "chi-squared",
    "accuracy": "accuracy (binomial)",
    "cusum": "error-rate CUSUM",
    "glr": "error-rate GLR",
    "adwin": "error-rate ADWIN",
    "label_prior": "label prior (chi-squared)",
    "mae": "MAE (z-test)",
    "rmse": "RMSE (z-test)",
    "abs_error_cusum": "absolute-error CUSUM",
    "abs_error_glr": "absolute-error GLR",
    "abs_error_adwin": "absolute-error ADWIN",
    "label_ks": "target (Kolmogorov-Smirnov)",
}


def command(
    model: Annotated[str, typer.Argument(help="Monitored model.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="State directory (default ./.driftloop)."),
    ] = None,
) -> None:
    """Current drift report of a model: tests per feature, performance, episode, history."""
    report, entries = fetch(data_dir, model)
    if html is not None:
        from driftloop.shared.cli.commands.drift_html import render_html

        html.write_text(render_html(report, entries), encoding="utf-8")
    if as_json:
        print(json.dumps(as_dict(report, entries)))  # noqa: T201 - machine-readable output
        return
    render(console, report, entries)
    if html is not None:
        console.print(f"HTML report written to {html}")


def fetch(
    data_dir: Path | None, model: str
) -> tuple[monitoring_pb2.DriftReport, list[monitoring_pb2.DriftHistoryEntry]]:
    from driftloop.shared.cli.app import rpc_error, settings
    from driftloop.shared.grpc.client import sync_channel

    with sync_channel(settings(data_dir), "monitoring") as channel:
        stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        try:
            report = stub.GetDriftReport(
                monitoring_pb2.GetDriftReportRequest(model=model), timeout=15
            )
            history = stub.ListDriftEvents(
                monitoring_pb2.ListDriftEventsRequest(model=model), timeout=15
            )
        except grpc.RpcError as exc:
            rpc_error(exc)
            raise  # unreachable: rpc_error exits
    return report, list(history.entries)


def as_dict(
    report: monitoring_pb2.DriftReport, entries: list[monitoring_pb2.DriftHistoryEntry]
) -> dict[str, Any]:
    return {
        "report": output.as_dict(report),
        "history": [output.as_dict(e) for e in entries],
    }


def at(ts: Any) -> str:
    """A protobuf Timestamp as UTC date and time ("-" when unset)."""
    nanos = ts.ToNanoseconds()
    if not nanos:
        return "-"
    return datetime.fromtimestamp(nanos / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def counts(report: monitoring_pb2.DriftReport) -> dict[str, tuple[int, int]]:
    """(reference rows, live rows) per column, from the distributions."""
    return {d.column: (d.reference_count, d.live_count) for d in report.distributions}


def evidence_rows(report: monitoring_pb2.DriftReport) -> list[list[str]]:
    """One row per test: column, test, statistic, p-value, threshold, drifted, ref n, live n."""
    sizes = counts(report)
    rows = []
    for f in report.features:
        ref_n, live_n = sizes.get(f.feature, (0, 0))
        rows.append(
            [
                f.feature,
                TEST_NAMES.get(f.test, f.test),
                f"{f.statistic:.4g}",
                f"{f.p_value:.3g}",
                f"{f.threshold:.3g}",
                "DRIFT" if f.drifted else "ok",
                f"{ref_n:,}" if ref_n else "-",
                f"{live_n:,}" if live_n else "-",
            ]
        )
    return rows


EVIDENCE_COLUMNS = (
    "column",
    "test",
    "statistic",
    "p-value / bound",
    "threshold",
    "drifted?",
    "reference n",
    "live n",
)


def summary_rows(report: monitoring_pb2.DriftReport) -> list[tuple[str, str]]:
    """Headline facts of the report as (label, value), shared by the table and the HTML page."""
    p, e = report.performance, report.episode
    return [
        ("model / version", f"{report.model} / {report.version}"),
        ("evaluated at", at(report.evaluated_at)),
        ("window", f"{at(report.window_start)} .. {at(report.window_end)}"),
        ("live window rows", f"{report.window_rows:,}"),
        ("reference rows", f"{report.reference_rows:,}"),
        ("rows seen (this version)", f"{report.rows_seen:,}"),
        ("rows of other versions", f"{report.rows_ignored:,}"),
        ("dataset drift share", f"{report.drift_share:.1%}"),
        ("drifted (latest window)", "yes" if report.drifted else "no"),
        ("labelled rows", f"{p.labelled_rows:,} (window {p.window_rows:,})"),
        ("unmatched / duplicate labels", f"{p.unmatched_labels:,} / {p.duplicate_labels:,}"),
        ("pending predictions", f"{p.pending_predictions:,}"),
        *_performance_rows(p),
        ("latest episode", e.episode_id or "none"),
        ("episode opened at", at(e.opened_at)),
        ("episode state", _episode(e)),
        ("cool-down", f"{e.cooldown_rows_left:,} rows left" if e.cooldown_rows_left else "done"),
    ]


def _performance_rows(p: monitoring_pb2.Performance) -> list[tuple[str, str]]:
    source = p.reference_source or "none yet"
    if p.task == "regression":
        return [
            ("live MAE / RMSE", _pair(p.live_mae, p.live_rmse, p.window_rows > 0)),
            (
                f"reference MAE / RMSE ({source})",
                _pair(p.reference_mae, p.reference_rmse, p.has_reference),
            ),
            ("labels not numbers (ignored)", f"{p.invalid_labels:,}"),
        ]
    return [
        ("live accuracy / F1", _pair(p.live_accuracy, p.live_f1_macro, p.window_rows > 0)),
        (
            f"reference accuracy / F1 ({source})",
            _pair(p.reference_accuracy, p.reference_f1_macro, p.has_reference),
        ),
    ]


def _pair(accuracy: float, f1: float, known: bool) -> str:
    return f"{accuracy:.3f} / {f1:.3f}" if known else "-"


def _episode(e: monitoring_pb2.EpisodeState) -> str:
    if not e.episode_id:
        return "-"
    if not e.open:
        return "closed (a deployment followed, or it timed out)"
    return f"open: further drift muted until a deployment or {e.reopens_in_s:.0f} s"


def history_rows(entries: list[monitoring_pb2.DriftHistoryEntry]) -> list[list[str]]:
    rows = []
    for entry in reversed(entries):
        ev = entry.event
        drifted = [f.feature for f in ev.features if f.drifted]
        rows.append(
            [
                at(entry.decided_at),
                ev.episode_id[:12],
                ev.version,
                ", ".join(drifted) or "-",
                f"{ev.drift_share:.1%}",
                f"{ev.live_rows:,}",
                entry.correlation_id[:12] or "-",
            ]
        )
    return rows


HISTORY_COLUMNS = (
    "decided at",
    "episode",
    "version",
    "drifted",
    "share",
    "live rows",
    "correlation",
)


def render(
    out: Console,
    report: monitoring_pb2.DriftReport,
    entries: list[monitoring_pb2.DriftHistoryEntry],
) -> None:
    head = Table(title=f"drift report: {report.model}", show_header=False)
    head.add_column("what", style="bold")
    head.add_column("value")
    for label, value in summary_rows(report):
        head.add_row(label, value)
    out.print(head)
    tests = Table(title="evidence (Bonferroni thresholds; performance rows: see README)")
    for column in EVIDENCE_COLUMNS:
        tests.add_column(column, justify="left" if column in ("column", "test") else "right")
    for row in evidence_rows(report):
        style = "bold red" if row[5] == "DRIFT" else None
        tests.add_row(*row, style=style)
    out.print(tests)
    history = Table(title=f"drift history ({len(entries)} episodes, newest first)")
    for column in HISTORY_COLUMNS:
        history.add_column(column)
    for row in history_rows(entries):
        history.add_row(*row)
    out.print(history)
