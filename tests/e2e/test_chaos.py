"""The short chaos matrix on the real stack: kill -9 validation mid-stream, poison messages on
every consumed topic, kill -9 serving mid-swap, one drift episode delivered three times with
training killed mid-run. Each must lose no row, curate none twice, and
leave a loop that still closes (`driftloop bench chaos` runs the full matrix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.shared.cli.bench.chaos import run_matrix

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FAULTS = ["kill_validation", "poison", "kill_serving", "duplicated_episode"]


def test_short_chaos_matrix_loses_nothing_and_the_loop_closes(tmp_path: Path) -> None:
    report = run_matrix(FAULTS, store="local", rows=400, data_dir=tmp_path / "stack")

    rows = {r["fault"]: r for r in report["faults"]}
    assert list(rows) == FAULTS
    for name, row in rows.items():
        assert row["injected"], name
        assert row["lost"] == 0 and row["duplicates"] == 0, row
        assert row["records_in"] == row["curated"] + row["rejected"] == 400, row
        assert row["rejected"] > 0, "the bad rows of the test data were rejected, not lost"
        assert row["loop_closed"], row
        assert all(row["checks"].values()), row
    assert rows["poison"]["checks"]["garbage_dead_lettered_on_every_topic"]
    assert rows["duplicated_episode"]["checks"]["episode_trained_once"]
    assert rows["duplicated_episode"]["info"]["runs_for_episode"] == 1
    assert report["faults_survived"] == len(FAULTS)
    assert report["records_lost"] == 0 and report["duplicates"] == 0
    assert report["versions_registered_twice"] == 0
    assert report["stack_exit_code"] == 0, "the stack stopped cleanly after the faults"
