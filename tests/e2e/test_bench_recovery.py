"""`driftloop bench recovery --quick --json` end to end, as a user runs it: the command starts its
own stack, drives three streams through it, prints the documented JSON last and stops every
process it started. Figures are checked for sanity only (speed and quality are the bench's job)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_until

from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.settings import CommonSettings

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
    data_dir = tmp_path / "stack"
    out = (tmp_path / "out.txt").open("w+b")
    bench = subprocess.Popen(
        [sys.executable, "-m", "driftloop.shared.cli", "bench", "recovery", "--quick", "--json"]
        + ["--data-dir", str(data_dir)],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    recorded: dict[str, int] = {}
    try:
        common = CommonSettings(data_dir=data_dir)

        def started() -> dict[str, int]:
            if bench.poll() is not None:
                return {"bench exited": 0}  # the exit code below says why
            pids = stack.recorded_pids(stack.read_endpoints(common) or {})
            return pids if {"up", "broker", *stack.SERVICES} <= set(pids) else {}

        recorded = wait_until(started, 180, "the bench's stack to start")
        assert bench.wait(480) == 0, (tmp_path / "out.txt").read_text()
        still = {name: pid for name, pid in recorded.items() if stack.pid_alive(pid)}
        assert not still, f"the bench left running: {still}"
    finally:
        for pid in [bench.pid, *(p for p in recorded.values() if p > 0)]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        bench.wait(10)
        out.close()

    text = (tmp_path / "out.txt").read_text()
    report = json.loads(text.strip().splitlines()[-1])
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
