"""`driftloop bench fleet` stops its stack when it gets SIGTERM: the stack runs in its own session
(the signal does not reach it), so without a handler the bench died and left `up` and its six
services running. The same start_stack/stop_stack serve `bench loop` and `bench recovery`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support import bench_process, wait_all_gone, wait_until

pytestmark = pytest.mark.integration

SMALLEST = [
    "--partitions", "2", "--rows-per-route", "2", "--warmup-blocks", "1", "--before-blocks", "1",
    "--after-blocks", "1", "--no-weather", "--min-rows", "2", "--window-rows", "10",
]  # fmt: skip


def test_sigterm_to_bench_fleet_stops_its_stack(tmp_path: Path) -> None:
    log = tmp_path / "bench.log"
    with bench_process(["fleet", *SMALLEST], tmp_path / "data", log) as bench:
        recorded = bench.wait_stack(240)
        assert bench.proc.poll() is None, log.read_text()

        os.kill(bench.proc.pid, signal.SIGTERM)

        wait_all_gone(recorded, 150, "every process of the bench's stack")
        wait_until(lambda: bench.proc.poll() is not None, 30, "the bench to exit")
        assert bench.proc.returncode == 128 + signal.SIGTERM, log.read_text()
