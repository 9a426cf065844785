"""Process supervision for the embedded stack: start in order, restart crashes with backoff.

Each child runs in its own process group with its output in <data-dir>/logs/<name>.log. A child
that exits is restarted after a delay that doubles on each quick crash (reset once it has stayed
up for `stable_after` seconds); every restart is logged. Children die with the supervising
process, even a SIGKILLed one (driftloop.shared.cli.children; `die_with_parent` is still
importable from here, as serving's worker pool and the tests' helpers do).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from driftloop.shared.cli.children import die_with_parent

log = structlog.get_logger(__name__)


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path


@dataclass
class _Child:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    history: list[int] = field(default_factory=list)


class Supervisor:
    """Owns a set of child processes; call `check()` periodically from the owner's loop."""

    def __init__(
        self,
        specs: list[ProcessSpec],
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._children = {s.name: _Child(s) for s in specs}
        self._initial = backoff_initial
        self._max = backoff_max
        self._stable_after = stable_after
        self._clock = clock

    def start(self, name: str) -> int:
        child = self._children[name]
        spec = child.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as out:
            child.proc = subprocess.Popen(
                spec.argv,
                env={**os.environ, **spec.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # why: children lead their own process groups (to be stopped as a group), so
                # a killed `driftloop up` would otherwise leave the broker and services running
                preexec_fn=die_with_parent(),
            )
        child.started_at = self._clock()
        child.restart_at = None
        log.info("process_started", process=name, pid=child.proc.pid)
        return child.proc.pid

    def check(self) -> list[str]:
        """Restart children that exited once their backoff elapsed; return names restarted."""
        now = self._clock()
        restarted = []
        for name, child in self._children.items():
            if child.proc is None:
                continue
            code = child.proc.poll()
            if code is None:
                if child.backoff and now - child.started_at > self._stable_after:
                    child.backoff = 0.0
                continue
            if child.restart_at is None:
                quick = now - child.started_at < self._stable_after
                child.backoff = min(
                    self._max, (child.backoff * 2 or self._initial) if quick else self._initial
                )
                child.restart_at = now + child.backoff
                child.history.append(code)
                log.warning(
                    "process_exited",
                    process=name,
                    exit_code=code,
                    restart_in_s=child.backoff,
                    log=str(child.spec.log_path),
                )
            elif now >= child.restart_at:
                child.restarts += 1
                pid = self.start(name)
                log.warning("process_restarted", process=name, pid=pid, restarts=child.restarts)
                restarted.append(name)
        return restarted

    def exited(self, name: str) -> bool:
        """Whether `name` was started and has exited (restart pending or not)."""
        proc = self._children[name].proc
        return proc is not None and proc.poll() is not None

    def restart_now(self, names: list[str], grace: float = 5.0) -> None:
        """Stop `names` (SIGTERM, SIGKILL after `grace`) and start them again at once, in
        order, without backoff: for restarts the owner decides on, not crashes."""
        self.stop(grace=grace, order=list(reversed(names)))
        for name in names:
            child = self._children[name]
            child.restarts += 1
            child.backoff = 0.0
            pid = self.start(name)
            log.warning("process_restarted", process=name, pid=pid, restarts=child.restarts)

    def pids(self) -> dict[str, int | None]:
        return {
            n: (c.proc.pid if c.proc and c.proc.poll() is None else None)
            for n, c in self._children.items()
        }

    def returncodes(self) -> dict[str, int | None]:
        return {n: (c.proc.poll() if c.proc else None) for n, c in self._children.items()}

    def restarts(self) -> dict[str, int]:
        return {n: c.restarts for n, c in self._children.items()}

    def stop(self, grace: float = 10.0, order: list[str] | None = None) -> None:
        """SIGTERM every child (in `order`, default reverse start order), SIGKILL after `grace`."""
        names = order or list(reversed(self._children))
        for name in names:
            proc = self._children[name].proc
            if proc is not None and proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name in names:
            proc = self._children[name].proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("process_killed", process=name, pid=proc.pid)
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
        log.info("processes_stopped", processes=names)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
