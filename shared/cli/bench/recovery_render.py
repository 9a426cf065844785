"""The tables of `driftloop bench recovery`: the streams' calibration, one row per moderate drift
episode, the streams that should have been left alone, and the summary line."""

from __future__ import annotations

from typing import Any

from driftloop.shared.cli.bench.recovery_streams import MODERATE, MODERATE_KINDS, Stream


def calibration_table(streams: list[Stream]) -> Any:
    from rich.table import Table

    low, high = (round(100 * v) for v in MODERATE)
    table = Table(
        title=(
            "stream calibration: error rate of a model fit like version 1, on independent rows "
            f"of each regime (moderate: +{low}..{high} points; harmless/stationary: within 1)"
        )
    )
    for column in ("stream", "kind", "seed", "before", "after", "rise", "reference"):
        table.add_column(column, justify="left" if column in ("stream", "kind") else "right")
    table.add_column("check")
    for s in streams:
        c = s.calibration
        if c is None:
            continue
        table.add_row(
            s.name,
            s.kind,
            str(s.seed),
            f"{c.error_before:.3f}",
            f"{c.error_after:.3f}",
            f"{100 * c.rise:+.1f}",
            f"{c.reference_error:.3f}",
            "ok" if c.ok else "[red]out of range[/red]",
        )
    table.caption = "\n".join(f"{s.name}: {s.source}" for s in streams)
    return table


def render(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    s = report["settings"]
    episodes = Table(
        title=(
            f"moderate drift episodes ({s['rate_rows_per_s']:g} rows/s per stream, labels "
            f"{s['label_delay_rows']} rows late; rows and seconds from the drift)"
        )
    )
    columns = (
        "stream", "detect rows (s)", "retrains", "first new", "recovery rows (s)",
        "acc before", "during", "after", "reference", "ref rows", "ratio", "worse",
    )  # fmt: skip
    for column in columns:
        episodes.add_column(column, justify="left" if column == "stream" else "right")
    for r in report["streams"]:
        if r["kind"] not in MODERATE_KINDS:
            continue
        episodes.add_row(
            f"{r['stream']} ({r['kind']})",
            _rows_s(r.get("rows_to_detection"), r.get("seconds_to_detection")),
            str(r["retrains"]),
            _num(r.get("rows_to_first_new_version")),
            _rows_s(r.get("rows_to_recovery"), r.get("seconds_to_recovery"), "not recovered"),
            _acc(r.get("accuracy_before")),
            _acc(r.get("accuracy_during")),
            _acc(r.get("accuracy_after")),
            _acc(r.get("reference_accuracy")),
            _num(r.get("reference_rows")),
            _num(r.get("rows_over_reference"), ".2f"),
            str(r["worse_promotions"]),
        )
    console.print(episodes)
    quiet = Table(title="streams that need no new model: what the loop did anyway")
    for column in ("stream", "detections", "retrains", "promotions", "worse", "acc before", "acc"):
        quiet.add_column(column, justify="left" if column == "stream" else "right")
    for r in report["streams"]:
        if r["kind"] in MODERATE_KINDS:
            continue
        quiet.add_row(
            f"{r['stream']} ({r['kind']})",
            str(r["detections"]),
            str(r["retrains"]),
            str(r["promotions"]),
            str(r["worse_promotions"]),
            _acc(r.get("accuracy_before")),
            _acc(r.get("accuracy")),
        )
    console.print(quiet)
    console.print(
        f"episodes recovered {report['episodes_recovered']}/{report['episodes']}; median rows to "
        f"recovery {_num(report['median_rows_to_recovery'])} "
        f"({_num(report['median_rows_to_recovery_over_reference'], '.2f')}x the reference's); "
        f"worse promotions {report['worse_promotions']}; stationary retrains "
        f"{report['stationary_retrains']}; harmless-shift promotions "
        f"{report['harmless_shift_promotions']}; failed requests {report['failed_requests']}, "
        f"failed label calls {report['failed_label_calls']}"
    )


def _rows_s(rows: int | None, seconds: float | None, missing: str = "-") -> str:
    return missing if rows is None else f"{rows} ({seconds:.1f})"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _num(value: float | None, fmt: str = ".0f") -> str:
    return "-" if value is None else format(value, fmt)
