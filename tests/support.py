"""Test helpers: wait on conditions with deadlines, start and always stop real processes."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from driftloop.shared.bus import envelope
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.cli.stack.supervisor import die_with_parent
from driftloop.shared.settings import CommonSettings


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
            last_error = exc
        time.sleep(0.1)  # poll
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}"
    )


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Async twin of wait_until; `predicate` may be sync or async."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Exception as exc:  # noqa: BLE001
            last_error = exc
        await asyncio.sleep(0.1)  # poll
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}"
    )


def start_process(
    argv: list[str], *, env: dict[str, str] | None = None, log_path: str | None = None
) -> subprocess.Popen[bytes]:
    """Start a process in its own process group (so stop_process can end its children too)."""
    if log_path is None:
        return subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    with open(log_path, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


@dataclass
class UpStack:
    """A `driftloop up` process and the pids its endpoints.json recorded once it was healthy."""

    process: subprocess.Popen[bytes]
    recorded: dict[str, int] = field(default_factory=dict)


@contextmanager
def running_up(common: CommonSettings, log_path: Path, timeout: float = 180.0) -> Iterator[UpStack]:
    """`driftloop up` on `common`'s data dir and ports, healthy; on the way out every recorded
    process group and `up` itself are killed (whatever state the test left them in)."""
    up = start_process(
        [sys.executable, "-m", "driftloop.shared.cli", "up"],
        env=stack_env(common),
        log_path=str(log_path),
    )
    found = UpStack(up)
    try:
        stack.wait_healthy(common, timeout=timeout, alive=lambda: up.poll() is None)
        found.recorded.update(stack.recorded_pids(stack.read_endpoints(common) or {}))
        yield found
    finally:
        kill_groups([up.pid, *found.recorded.values()])
        stop_process(up, grace=5)


def kill_groups(pids: Iterable[int]) -> None:
    """SIGKILL the process group of each of `pids`, passing over those already gone."""
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def running(pids: Mapping[str, int]) -> dict[str, int]:
    """Those of `pids` (name -> pid) still running (a zombie is not)."""
    return {name: pid for name, pid in pids.items() if stack.pid_alive(pid)}


def wait_all_gone(pids: Mapping[str, int], timeout: float, what: str = "every process") -> None:
    """Wait until every one of `pids` (name -> pid) has ended."""
    wait_until(lambda: not running(pids), timeout, f"{what} to end: {dict(pids)}")


@dataclass
class Bench:
    """A `driftloop bench` process started by `bench_process`, and the pids its stack recorded."""

    proc: subprocess.Popen[bytes]
    common: CommonSettings
    recorded: dict[str, int] = field(default_factory=dict)

    def wait_stack(self, timeout: float) -> dict[str, int]:
        """The pids the bench's stack records once it has `up`, the broker and every service, or
        what it had when the bench exited first (the bench's exit code says why)."""

        def started() -> bool:
            self.recorded = stack.recorded_pids(stack.read_endpoints(self.common) or {})
            full = {"up", "broker", *stack.SERVICES} <= set(self.recorded)
            return full or self.proc.poll() is not None

        wait_until(started, timeout, "the bench's stack to start")
        return self.recorded


@contextmanager
def bench_process(args: list[str], data_dir: Path, output: Path) -> Iterator[Bench]:
    """`driftloop bench <args> --data-dir <data_dir>` in its own session, its output in `output`;
    on the way out, even on failure, its process group and those its stack recorded are killed
    (the stack runs in a session of its own, so ending the bench alone could leave it running)."""
    argv = [sys.executable, "-m", "driftloop.shared.cli", "bench", *args]
    proc = start_process([*argv, "--data-dir", str(data_dir)], log_path=str(output))
    bench = Bench(proc, CommonSettings(data_dir=data_dir))
    try:
        yield bench
    finally:
        kill_groups([proc.pid, *bench.recorded.values()])
        proc.wait(10)


def run_bench_json(args: list[str], tmp_path: Path, timeout: float) -> tuple[dict[str, Any], str]:
    """Run `driftloop bench <args>` (with --json) to its end, its stack under tmp_path: the report
    its last line prints and its whole output, once it exited 0 and left none of its stack."""
    output = tmp_path / "out.txt"
    with bench_process(args, tmp_path / "stack", output) as bench:
        recorded = bench.wait_stack(180)
        assert bench.proc.wait(timeout) == 0, output.read_text()
        still = running(recorded)
        assert not still, f"the bench left running: {still}"
    text = output.read_text()
    return json.loads(text.strip().splitlines()[-1]), text


def stack_env(common: Any) -> dict[str, str]:
    """Environment pointing a driftloop process at `common`'s data dir and ports."""
    env = {"DRIFTLOOP_DATA_DIR": str(common.data_dir), "DRIFTLOOP_LOG_JSON": "true"}
    env.update(
        {f"DRIFTLOOP_PORTS__{k.upper()}": str(v) for k, v in common.ports.model_dump().items()}
    )
    return env


async def read_events(
    bootstrap: str,
    topic: str,
    keep: Callable[[ConsumerRecord, envelope.Envelope], bool],
    enough: Callable[[list[envelope.Envelope]], bool],
) -> list[envelope.Envelope]:
    """Events of `topic` from its start that `keep` accepts, until `enough` of them (60 s)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[envelope.Envelope] = []
    try:
        async with asyncio.timeout(60):
            while not enough(found):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    events = [(r, envelope.decode(r.value)) for r in records]
                    found += [e for r, e in events if keep(r, e)]
    finally:
        await consumer.stop()
    return found
