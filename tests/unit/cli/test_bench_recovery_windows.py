"""`driftloop bench recovery --windows`: the offline measurement behind training's choice of
post-drift rows only (README, "How the loop decides on ordinary drift")."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from driftloop.shared.cli.app import app
from driftloop.shared.cli.bench.recovery_windows import WAYS, summary

pytestmark = pytest.mark.unit


def test_the_windows_command_compares_three_ways_on_the_drifted_streams() -> None:
    result = CliRunner().invoke(app, ["bench", "recovery", "--windows", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    rows = report["windows"]
    assert rows and {r["kind"] for r in rows} <= {"abrupt", "gradual", "incremental"}
    assert all(0.5 < r[w] <= 1 for r in rows for w in WAYS)
    # after an abrupt drift, 1000 post-drift rows beat a window that mixes in the old regime
    at_1000 = next(r for r in rows if r["rows"] == 1000)
    assert at_1000["post-drift"] > at_1000["recent"]
    assert sum(report["best_count"].values()) == len(rows)


def test_the_summary_averages_per_row_count() -> None:
    rows = [
        {
            "stream": "a",
            "kind": "abrupt",
            "rows": 250,
            "post-drift": 0.9,
            "recent": 0.8,
            "weighted": 0.85,
        },
        {
            "stream": "b",
            "kind": "abrupt",
            "rows": 250,
            "post-drift": 0.7,
            "recent": 0.8,
            "weighted": 0.75,
        },
    ]
    found = summary(rows)
    assert found["mean_accuracy_by_rows"]["250"] == {
        "post-drift": 0.8,
        "recent": 0.8,
        "weighted": 0.8,
    }
    assert found["best_count"] == {"post-drift": 1, "recent": 1, "weighted": 0}
