"""`driftloop down` ends every process endpoints.json records, even when `up` hangs: each service
runs in its own process group, so stopping `up` alone could leave them running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_ports
from support import running, running_up, stack_env, wait_until

from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration


def test_down_ends_every_recorded_process_when_up_hangs(tmp_path: Path) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", ports=free_ports())
    env = {**os.environ, **stack_env(common)}
    with running_up(common, tmp_path / "up.log", timeout=120) as found:
        up, recorded = found.process, found.recorded
        assert set(recorded) == {"up", "broker", *stack.SERVICES}
        os.kill(up.pid, signal.SIGSTOP)  # `up` hangs: it will never act on SIGTERM

        down = subprocess.run(
            [sys.executable, "-m", "driftloop.shared.cli", "down", "--grace", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert down.returncode == 0, down.stdout + down.stderr
        assert "ended here" in down.stdout and "up" in down.stdout
        still = running({n: p for n, p in recorded.items() if p != up.pid})
        assert not still, f"left running: {still}"
        wait_until(lambda: up.poll() is not None, 10, "the hung up process to be reaped")
        assert not stack.endpoints_path(common).exists()


def test_down_without_a_stack_says_so(tmp_path: Path) -> None:
    down = subprocess.run(
        [sys.executable, "-m", "driftloop.shared.cli", "down", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert down.returncode != 0 and "no running stack found" in down.stdout + down.stderr
