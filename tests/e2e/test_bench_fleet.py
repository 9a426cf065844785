"""`driftloop bench fleet --json` end to end on a small fleet, as a user runs it: the command
starts its own stack with serving's model memory limited, trains a fleet of 12 per-route
regressors, drives the roadworks and the weather shift through it, prints the documented JSON
last and stops every process it started. Figures are checked for truths only, never timings
(speed is the bench's job)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import run_bench_json

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

PARTITIONS = 12
KEYS = (
    "partitions",
    "drifted_partitions",
    "detected_partitions",
    "false_retrains",
    "median_drift_to_serving_s",
    "max_drift_to_serving_s",
    "mae_after_over_reference",
    "serving_p99_ms_hot",
    "serving_rss_mb",
    "monitoring_rss_mb",
)


def test_bench_fleet_prints_the_documented_json_and_cleans_up(tmp_path: Path) -> None:
    args = ["fleet", "--json", "--partitions", str(PARTITIONS), "--before-blocks", "3"]
    args += ["--after-blocks", "3", "--phase-timeout", "240"]
    report, text = run_bench_json(args, tmp_path, 1400)
    for key in KEYS:
        assert key in report, key
    assert report["partitions"] == PARTITIONS
    assert report["warmup_partitions_in_production"] >= 1, "no partition got its own model"
    assert report["drifted_partitions"] == len(report["drifted"]) >= 1
    drifted = {row["partition"] for row in report["drifted"]}
    assert all(p.startswith("arrivals/route_id=") for p in drifted), drifted
    assert 0 <= report["detected_partitions"] <= report["drifted_partitions"]
    assert report["false_retrains"] == len(report["false_retrain_partitions"])
    assert not set(report["false_retrain_partitions"]) & drifted
    assert report["failed_requests"] == 0, report["request_errors"]
    assert report["failed_label_calls"] == report["failed_ingest_calls"] == 0
    assert report["requests"] > 0 and report["hot_requests"] > 0
    assert report["requests_logged"] > 0.9 * report["requests"], "the prediction log read back"
    for row in report["drifted"]:
        mae = row["mae"]
        assert mae["before"] is not None and mae["during"] is not None, row
        assert mae["during"] > mae["before"], f"the roadworks did not hurt {row}"
    # the budget holds a fifth of the partition models, so serving loaded and evicted some
    live = report["serving_metrics_live"]
    assert live.get("driftloop_serving_partition_evictions_total", 0) > 0, live
    assert report["settings"]["lru_capacity"] == PARTITIONS // 5
    assert report["serving_rss_mb"] > 0 and report["monitoring_rss_mb"] > 0
    assert "bench fleet: 12 partitions" in text and "drifted partitions" in text
