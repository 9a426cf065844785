"""The supervisor restarts crashed processes with growing backoff and stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import wait_until

from driftloop.shared.cli.stack.supervisor import ProcessSpec, Supervisor

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_crashing_process_is_restarted_with_backoff(tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    crash = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(3)"]
    clock = Clock()
    sup = Supervisor(
        [ProcessSpec("crasher", crash, {}, tmp_path / "crasher.log")],
        backoff_initial=1.0,
        backoff_max=4.0,
        clock=clock,
    )
    sup.start("crasher")
    try:
        wait_until(lambda: marker.exists() and sup.pids()["crasher"] is None, 10, "first crash")
        assert sup.check() == []  # exit noticed, restart scheduled 1 s later
        assert sup.check() == []  # not yet due
        clock.now += 1.0
        assert sup.check() == ["crasher"]
        wait_until(
            lambda: len(marker.read_text()) == 2 and sup.pids()["crasher"] is None,
            10,
            "second crash",
        )
        sup.check()
        clock.now += 1.5
        assert sup.check() == [], "backoff doubled to 2 s after a quick crash"
        clock.now += 0.5
        assert sup.check() == ["crasher"]
        assert sup.restarts() == {"crasher": 2}
    finally:
        sup.stop(grace=5)


def test_stop_terminates_everything(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import signal; signal.pause()"]
    sup = Supervisor([ProcessSpec(f"s{i}", sleeper, {}, tmp_path / f"s{i}.log") for i in range(3)])
    pids = [sup.start(f"s{i}") for i in range(3)]
    assert all(sup.pids().values())
    sup.stop(grace=30)
    assert sup.returncodes() == {"s0": -15, "s1": -15, "s2": -15}, "stopped by SIGTERM, not KILL"
    assert sup.pids() == {"s0": None, "s1": None, "s2": None}
    assert len(set(pids)) == 3


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL of the process that owns the stack (e.g. `driftloop up`) leaves no orphans."""
    pid_file = tmp_path / "child.pid"
    owner = textwrap.dedent(
        f"""
        import signal, sys
        from pathlib import Path
        from driftloop.shared.cli.stack.supervisor import ProcessSpec, Supervisor
        sleeper = [sys.executable, "-c", "import signal; signal.pause()"]
        sup = Supervisor([ProcessSpec("child", sleeper, {{}}, Path({str(tmp_path / "c.log")!r}))])
        Path({str(pid_file)!r}).write_text(str(sup.start("child")))
        signal.pause()
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", owner])
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 20, "child started")
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.kill()
        parent.wait(10)
        wait_until(lambda: not _alive(child), 10, "child gone after its parent was killed")
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid_file.exists() and _alive(int(pid_file.read_text() or 0)):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone: it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
