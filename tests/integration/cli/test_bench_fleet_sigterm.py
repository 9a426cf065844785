"""`driftloop bench fleet` stops its stack when it gets SIGTERM: the stack runs in its own session
(the signal does not reach it), so without a handler the bench died and left `up` and its six
services running. The same start_stack/stop_stack serve `bench loop` and `bench recovery`."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from support import start_process, stop_process, wait_until

from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

SMALLEST = [
    "--partitions", "2", "--rows-per-route", "2", "--warmup-blocks", "1", "--before-blocks", "1",
    "--after-blocks", "1", "--no-weather", "--min-rows", "2", "--window-rows", "10",
]  # fmt: skip


def test_sigterm_to_bench_fleet_stops_its_stack(tmp_path: Path) -> None:
    common = CommonSettings(data_dir=tmp_path / "data")
    log = tmp_path / "bench.log"
    bench = start_process(
        [sys.executable, "-m", "driftloop.shared.cli", "bench", "fleet", *SMALLEST,
         "--data-dir", str(common.data_dir)],
        log_path=str(log),
    )  # fmt: skip
    recorded: dict[str, int] = {}
    try:

        def stack_pids() -> dict[str, int]:
            assert bench.poll() is None, log.read_text()
            pids = stack.recorded_pids(stack.read_endpoints(common) or {})
            return pids if {"up", "broker", *stack.SERVICES} <= set(pids) else {}

        recorded = wait_until(stack_pids, 240, "the bench's stack to record its pids")

        os.kill(bench.pid, signal.SIGTERM)

        wait_until(
            lambda: not [p for p in recorded.values() if stack.pid_alive(p)],
            150,
            f"every process of the bench's stack to end: {recorded}",
        )
        wait_until(lambda: bench.poll() is not None, 30, "the bench to exit")
        assert bench.returncode == 128 + signal.SIGTERM, log.read_text()
    finally:
        for pid in recorded.values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        stop_process(bench, grace=5)
