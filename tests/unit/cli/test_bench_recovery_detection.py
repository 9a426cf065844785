"""`driftloop bench recovery --detection`: the recovery streams replayed offline through the
monitor, where it decides (issue #17: a live run minus this replay is the stack's own delay)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from driftloop.shared.cli.app import app
from driftloop.shared.cli.bench.recovery_detection import summary

pytestmark = pytest.mark.unit


def test_the_detection_replay_decides_after_the_drift_and_never_on_a_stationary_stream() -> None:
    result = CliRunner().invoke(app, ["bench", "recovery", "--detection", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    rows = {r["stream"]: r for r in report["detection"]}
    assert set(rows) == {"sea-abrupt-9to8", "sea-harmless-boundary", "sea-stationary"}
    abrupt = rows["sea-abrupt-9to8"]
    assert abrupt["rows_to_detection"] is not None and abrupt["rows_to_detection"] > 0
    assert abrupt["alarms_before_drift"] == 0
    assert set(abrupt["drifted"]) & {"_error_rate", "_error_shift", "_error_adwin", "_label"}
    assert rows["sea-stationary"]["decisions"] == 0
    # the detectors start from the profile's rate plus a margin, and the version's first live
    # labels are pooled into it
    for row in rows.values():
        assert row["reference_error_start"] > row["profile_error"]
        assert row["reference_source_end"] == "profile+live"
    assert report["episodes"] == 1 and report["episodes_detected"] == 1
    assert report["median_rows_to_detection"] == abrupt["rows_to_detection"]


def test_the_summary_counts_only_drifted_streams_as_episodes() -> None:
    def row(kind: str, detection: int | None, decisions: int, early: int = 0) -> dict:
        return {
            "kind": kind,
            "rows_to_detection": detection,
            "decisions": decisions,
            "alarms_before_drift": early,
        }

    found = summary(
        [
            row("abrupt", 1000, 1),
            row("gradual", 3000, 1),
            row("abrupt", None, 0),
            row("harmless", 100, 1),
            row("stationary", None, 2, 2),
        ]
    )
    assert found == {
        "episodes": 3,
        "episodes_detected": 2,
        "median_rows_to_detection": 2000.0,
        "alarms_before_drift": 0,
        "stationary_detections": 2,
    }
