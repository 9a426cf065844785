"""`driftloop bench changelog --json` as a user runs it, on the embedded broker with a short
stream: the documented JSON last, the changelog's records counted only when it is on (one per
prediction awaiting its label), the ratio taken against the run without it. Figures are checked
for sanity only (speed is the bench's job)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LOGS, ROWS = 40, 10


def test_bench_changelog_prints_on_and_off_and_their_ratio() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "driftloop.shared.cli", "bench", "changelog", "--json"]
        + ["--logs", str(LOGS), "--rows", str(ROWS), "--rounds", "1", "--models", "2"],
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    found = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert (found["logs"], found["rows_per_log"], found["models"]) == (LOGS, ROWS, 2)
    result = found["embedded"]
    assert result["changelog_records_per_run"] == LOGS * ROWS
    assert [r["changelog_records"] for r in result["runs"]["off"]] == [0]
    assert result["logs_per_s_off"] > 0 and result["logs_per_s_on"] > 0
    assert result["ratio_on_off"] == pytest.approx(
        result["logs_per_s_on"] / result["logs_per_s_off"], abs=1e-3
    )
