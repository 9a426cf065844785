"""`driftloop bench recovery --quick --json` end to end, as a user runs it: the command starts its
own stack, drives three streams through it, prints the documented JSON last and stops every
process it started. Figures are checked for sanity only (speed and quality are the bench's job)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import run_bench_json

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

KEYS = (
    "episodes",
    "episodes_recovered",
    "median_rows_to_recovery",
    "median_rows_to_recovery_over_reference",
    "worse_promotions",
    "stationary_retrains",
    "harmless_shift_promotions",
)


def test_bench_recovery_quick_prints_the_documented_json_and_cleans_up(tmp_path: Path) -> None:
    report, text = run_bench_json(["recovery", "--quick", "--json"], tmp_path, 480)
    for key in KEYS:
        assert key in report, key
    assert report["episodes"] == 1 and 0 <= report["episodes_recovered"] <= 1
    assert report["failed_requests"] == report["failed_label_calls"] == 0
    assert all(c["ok"] for c in report["calibration"]), report["calibration"]
    rows = {r["kind"]: r for r in report["streams"]}
    assert set(rows) == {"abrupt", "harmless", "stationary"}
    for row in rows.values():
        assert row["rows"] == report["settings"]["rows_per_stream"] == 4000
        assert row["versions_served"], "version 1 answered"
        assert 0.8 < row["accuracy"] < 0.95, row  # the streams flip 10% of their labels
    assert rows["stationary"]["labels_joined"] > 3000, "the monitor joined the late labels"
    assert rows["abrupt"]["accuracy_before"] > rows["abrupt"]["accuracy_during"]
    assert rows["abrupt"]["reference_accuracy"] > rows["abrupt"]["accuracy_during"]
    assert report["stationary_retrains"] == rows["stationary"]["retrains"]
    assert report["harmless_shift_promotions"] == rows["harmless"]["promotions"]
    assert "moderate drift episodes" in text and "stream calibration" in text
