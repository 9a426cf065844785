"""What `driftloop bench fleet` prints: the fleet's figures, issue #18's bars beside them
(reported, never asserted), and the drifted partitions one by one."""

from __future__ import annotations

from typing import Any

from driftloop.shared.cli.bench.fleet_traffic import FLEET

FIGURES = (
    ("partitions", "partitions"),
    ("drifted_partitions", "drifted (roadworks)"),
    ("detected_partitions", "detected"),
    ("false_detections", "undrifted partitions alarmed"),
    ("false_drift_runs", "undrifted partitions' drift runs"),
    ("false_retrains", "false retrains (undrifted, promoted)"),
    ("first_own_models", "undrifted partitions getting their first own model"),
    ("drifted_serving_new", "drifted serving a new version"),
    ("median_drift_to_detected_s", "drift -> detected, median s"),
    ("median_drift_to_promoted_s", "drift -> new version promoted, median s"),
    ("median_drift_to_serving_s", "drift -> new version answers, median s"),
    ("p90_drift_to_serving_s", "drift -> new version answers, p90 s"),
    ("max_drift_to_serving_s", "drift -> new version answers, max s"),
    ("mae_after_over_reference", "MAE after / reference (median)"),
    ("weather_fleet_episodes", "weather: fleet episodes"),
    ("weather_fleet_episode_events", "weather: fleet episode events (first + follow-ups)"),
    ("weather_episode_partitions", "weather: partitions in them"),
    ("weather_partition_drift_events", "weather: partition drift events"),
    ("weather_global_serving_s", "weather: global model's new version, s"),
    ("weather_partitions_serving_new", "weather: partitions serving a new version"),
    ("weather_median_to_serving_s", "weather: to a new version, median s"),
    ("weather_max_to_serving_s", "weather: to a new version, max s"),
    ("weather_mae_after_over_reference", "weather: MAE after / reference (median)"),
    ("undrifted_median_mae_before", "undrifted MAE before (median)"),
    ("undrifted_median_mae_roadworks", "undrifted MAE during roadworks (median)"),
    ("serving_p50_ms_hot", "serving p50 ms, hot"),
    ("serving_p99_ms_hot", "serving p99 ms, hot"),
    ("serving_p50_ms_cold", "serving p50 ms, cold"),
    ("serving_p99_ms_cold", "serving p99 ms, cold"),
    ("requests", "requests"),
    ("failed_requests", "failed requests"),
    ("live_rows_per_s", "live rows/s"),
    ("serving_rss_mb", "serving peak RSS MiB"),
    ("monitoring_rss_mb", "monitoring peak RSS MiB"),
    ("training_rss_mb", "training peak RSS MiB"),
    ("training_runs_per_minute", "training runs/min (live)"),
    ("warmup_fleet_training_s", "warm-up: fleet trained in s"),
)


def criteria(r: dict[str, Any]) -> dict[str, bool | None]:
    """Issue #18's "done when" bars this run can speak to (None: it cannot tell)."""

    def at_most(key: str, bar: float) -> bool | None:
        value = r.get(key)
        return None if value is None else value <= bar

    drifted = r.get("drifted_partitions", 0)
    every = r.get("drifted_serving_new") == drifted and drifted > 0
    out: dict[str, bool | None] = {
        "every_drifted_detected": r.get("detected_partitions") == drifted,
        "no_false_retrains": r.get("false_retrains") == 0,
        "every_roadworks_serving_within_120s": every
        and bool(at_most("max_drift_to_serving_s", 120)),
        "median_roadworks_le_20s": at_most("median_drift_to_serving_s", 20),
        "mae_after_over_reference_le_1_10": at_most("mae_after_over_reference", 1.10),
        "zero_failed_requests": r.get("failed_requests") == 0,
    }
    if "weather_fleet_episodes" in r:
        out["weather_one_fleet_episode"] = r["weather_fleet_episodes"] == 1
        out["weather_global_within_60s"] = at_most("weather_global_serving_s", 60)
        out["weather_every_partition_within_600s"] = r.get(
            "weather_partitions_serving_new"
        ) == r.get("partitions") and bool(at_most("weather_max_to_serving_s", 600))
    return out


def render(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    report["criteria"] = criteria(report)
    table = Table(title=f"bench fleet: {report['partitions']} partitions")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, label in FIGURES:
        if key in report:
            table.add_row(label, _cell(report[key]))
    console.print(table)
    drifted = Table(title="drifted partitions (roadworks)")
    for column in ("partition", "detected s", "promoted s", "answers s", "seen by"):
        drifted.add_column(column)
    for column in ("MAE before", "during", "after", "ref."):
        drifted.add_column(column, justify="right")
    for row in report.get("drifted", [])[:25]:
        mae = row["mae"]
        drifted.add_row(
            row["partition"].removeprefix(f"{FLEET}/"),
            _cell(row["drift_to_detected_s"]) if row["detected"] else "no",
            _cell(row["drift_to_promoted_s"]),
            _cell(row["drift_to_serving_s"]),
            row["seen_by"] or "-",
            *(_cell(mae.get(k)) for k in ("before", "during", "after", "reference")),
        )
    console.print(drifted)
    metrics = report.get("serving_metrics_live") or {}
    if metrics:
        console.print(
            "serving's model cache, increase during the live phase: "
            + ", ".join(f"{k} {v:g}" for k, v in metrics.items())
        )
    else:
        console.print("serving reported no model-cache metrics (loads, evictions)")
    if report.get("request_errors"):
        console.print(f"failed requests: {report['request_errors']}")
    console.print(
        "criteria (issue #18, reported, not asserted): "
        + ", ".join(f"{k} {_verdict(v)}" for k, v in report["criteria"].items())
    )


def _verdict(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)
