"""What a bench or the stack starts dies with it, even when it is SIGKILLed or OOM-killed (a
signal no handler sees): every launcher arms PR_SET_PDEATHSIG (driftloop.shared.cli.children).
Before, a killed `driftloop bench ...` left its broker, `up` and six services running, each in a
session of its own.

Each test runs a small parent process that starts children through a real launcher and writes
their pids, SIGKILLs that parent alone (as the OOM killer would), and waits for the children to
end. Linux only: elsewhere the launchers arm nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import kafka_broker
import pytest
from conftest import free_ports
from support import (
    kill_groups,
    running,
    running_up,
    stack_env,
    start_process,
    wait_all_gone,
    wait_until,
)

from driftloop.shared.cli.children import ORPHANED_EXIT
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.settings import CommonSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's"),
]

PREAMBLE = """
import json, os, signal, subprocess, sys
from pathlib import Path

def hold(pids):
    '''Write what this process started ({{name: pid}}), then wait to be killed.'''
    tmp = Path({pids_file!r} + ".tmp")
    tmp.write_text(json.dumps(pids))
    tmp.replace({pids_file!r})
    while True:
        signal.pause()
"""


@dataclass
class Parent:
    """A parent process running a script that starts children and then `hold`s their pids."""

    proc: subprocess.Popen[bytes]
    pids_file: Path
    log: Path
    pids: dict[str, int] = field(default_factory=dict)

    def wait_children(self, timeout: float) -> dict[str, int]:
        wait_until(
            lambda: self.pids_file.exists() or self.proc.poll() is not None,
            timeout,
            "the parent to start its children",
        )
        assert self.pids_file.exists(), (
            f"the parent exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}"
        )
        self.pids = {name: int(pid) for name, pid in json.loads(self.pids_file.read_text()).items()}
        assert running(self.pids) == self.pids, f"children not running: {self.pids}"
        return self.pids

    def kill(self) -> None:
        """SIGKILL the parent alone (not its process group), as the OOM killer would."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@contextmanager
def parent_running(
    tmp_path: Path, body: str, more_pids: Callable[[], dict[str, int]] = dict
) -> Iterator[Parent]:
    """A parent process running `body` after PREAMBLE; on the way out, even on failure, it and
    every child it reported (or `more_pids` finds) are killed with their process groups."""
    pids_file = tmp_path / "children.json"
    script = PREAMBLE.format(pids_file=str(pids_file)) + textwrap.dedent(body)
    log = tmp_path / "parent.log"
    proc = start_process([sys.executable, "-c", script], log_path=str(log))
    parent = Parent(proc, pids_file, log)
    try:
        yield parent
    finally:
        kill_groups([parent.proc.pid, *parent.pids.values(), *more_pids().values()])
        parent.proc.wait(10)


@pytest.mark.parametrize("armed", [True, False], ids=["armed", "unarmed-control"])
def test_a_child_dies_with_its_killed_parent(tmp_path: Path, armed: bool) -> None:
    """The control shows the test can fail: without the death signal the child outlives it."""
    body = f"""
        from driftloop.shared.cli.children import die_with_parent
        child = subprocess.Popen(
            [sys.executable, "-c", "import signal; signal.pause()"],
            start_new_session=True,
            preexec_fn=die_with_parent() if {armed} else None,
        )
        hold({{"child": child.pid}})
    """
    with parent_running(tmp_path, body) as parent:
        children = parent.wait_children(30)
        parent.kill()
        if armed:
            wait_all_gone(children, 30, "the child of the killed parent")
        else:
            assert running(children) == children, "the unarmed child ended with its parent"


@pytest.mark.parametrize("alive", [True, False], ids=["parent-alive", "parent-gone"])
def test_a_child_whose_parent_died_before_it_was_armed_exits_before_exec(alive: bool) -> None:
    """The race: the parent dies between fork and prctl, the child is reparented and the signal
    will never come; the preexec_fn sees its parent pid changed and exits instead of running."""
    parent = "os.getppid()" if alive else "-1"  # -1: not the pid of any parent
    script = (
        "import os\nfrom driftloop.shared.cli.children import arm_in_child\n"
        f"arm_in_child({parent})()\nprint('went on')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    if alive:
        assert (done.returncode, done.stdout) == (0, "went on\n"), done.stderr
    else:
        assert (done.returncode, done.stdout) == (ORPHANED_EXIT, ""), done.stderr


def test_the_ingest_benchs_broker_and_services_die_with_it(tmp_path: Path) -> None:
    """`bench ingest`'s launcher: the embedded broker (Tansu), ingestion and validation."""
    body = f"""
        from driftloop.shared.cli.bench.ingest_run import running_stack
        with running_stack(Path({str(tmp_path / "stack")!r})) as started:
            hold(started.pids)
    """
    with parent_running(tmp_path, body) as parent:
        children = parent.wait_children(120)
        assert set(children) == {"broker", "ingestion", "validation"}
        parent.kill()
        wait_all_gone(children, 60, "the ingest bench's broker and services")


def test_the_stack_a_bench_started_stops_when_the_bench_is_killed(tmp_path: Path) -> None:
    """`bench chaos|loop|recovery|fleet`'s launcher runs `driftloop up`: killed, the bench leaves
    `up` a SIGTERM, and `up` stops its broker and services as on `driftloop down`."""
    data = tmp_path / "data"
    body = f"""
        from driftloop.shared.cli.chaos.infra import start_stack
        from driftloop.shared.cli.stack import embedded
        common, proc = start_stack(Path({str(data)!r}))
        hold(embedded.recorded_pids(embedded.read_endpoints(common)))
    """
    common = CommonSettings(data_dir=data)

    def recorded() -> dict[str, int]:  # for the clean-up, should the parent not report them
        return stack.recorded_pids(stack.read_endpoints(common) or {})

    with parent_running(tmp_path, body, recorded) as parent:
        children = parent.wait_children(240)
        assert set(children) == {"up", "broker", *stack.SERVICES}
        parent.kill()
        wait_all_gone(children, 150, "`up`, the broker and every service")
        assert not stack.endpoints_path(common).exists(), "`up` did not stop cleanly"


def test_a_killed_up_takes_its_stack_along_and_down_says_so(tmp_path: Path) -> None:
    """`driftloop up` itself SIGKILLed: nothing supervises its services any more, so they end
    with it; `down` then finds nothing to stop and removes the endpoints.json left behind."""
    common = CommonSettings(data_dir=tmp_path / "data", ports=free_ports())
    with running_up(common, tmp_path / "up.log") as found:
        up, recorded = found.process, found.recorded
        assert set(recorded) == {"up", "broker", *stack.SERVICES}
        os.kill(up.pid, signal.SIGKILL)
        up.wait(10)
        wait_all_gone(recorded, 60, "the broker and services of the killed `up`")

        down = subprocess.run(
            [sys.executable, "-m", "driftloop.shared.cli", "down"],
            env={**os.environ, **stack_env(common)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        said = " ".join((down.stdout + down.stderr).split())  # unwrapped (rich wraps lines)
        assert down.returncode != 0 and "no running stack found" in said, said
        assert "removed the endpoints.json" in said, said
        assert not stack.endpoints_path(common).exists()


def test_a_kafka_broker_dies_with_the_bench_that_started_it(tmp_path: Path) -> None:
    """`--broker kafka`'s launcher: the JVM gets SIGTERM and shuts down (a controlled shutdown)."""
    reason = kafka_broker.missing()
    if reason is not None:
        kafka_broker.skip_or_fail(reason)
    body = f"""
        from driftloop.shared.cli.stack import kafka
        broker = kafka.start(
            Path({str(tmp_path / "kafka")!r}),
            libs=Path({str(kafka_broker.LIBS)!r}),
            log4j=Path({str(kafka_broker.LOG4J_CONFIG)!r}),
            heap={kafka_broker.HEAP!r},
            fast_start=True,
        )
        hold({{"kafka": broker.pid}})
    """
    with parent_running(tmp_path, body) as parent:
        children = parent.wait_children(180)
        parent.kill()
        wait_all_gone(children, 120, "the Kafka broker's JVM")
