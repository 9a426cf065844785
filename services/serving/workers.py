"""Several serving processes on one port: the parent that starts, watches and stops the workers.

With DRIFTLOOP_SERVING_WORKERS > 1 the serving process serves nothing itself: it starts that many
`python -m driftloop.services.serving --worker I` processes (each binds the gRPC port with
SO_REUSEPORT), serves their merged metrics (prometheus-client multiprocess mode) on the metrics
port, forwards SIGTERM/SIGINT, and exits non-zero, stopping the others, when a worker dies.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector, multiprocess, start_http_server
from prometheus_client.metrics_core import Metric

from driftloop.shared.cli.stack.supervisor import die_with_parent
from driftloop.shared.errors import InvalidInput, Unavailable
from driftloop.shared.settings import CommonSettings

log = structlog.get_logger(__name__)

WORKER_FLAG = "--worker"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STOP_GRACE_S = 15.0
"""How long workers get to drain after SIGTERM before they are killed (each needs up to ~10 s:
5 s of gRPC grace, 5 s for consumers)."""
POLL_S = 0.1


def worker_index(argv: Sequence[str]) -> int | None:
    """The `--worker I` this process was started with by a serving parent, else None."""
    args = list(argv)
    if WORKER_FLAG not in args:
        return None
    at = args.index(WORKER_FLAG)
    try:
        index = int(args[at + 1])
    except (IndexError, ValueError) as exc:
        raise InvalidInput(f"{WORKER_FLAG} needs a worker index, got {args[at + 1 :]}") from exc
    if index < 0:
        raise InvalidInput(f"{WORKER_FLAG} index must be >= 0, got {index}")
    return index


def worker_argv(index: int) -> list[str]:
    return [sys.executable, "-m", "driftloop.services.serving", WORKER_FLAG, str(index)]


def check_port_free(host: str, port: int) -> None:
    """Raise Unavailable when something already listens on host:port.

    why: SO_REUSEPORT lets a stale serving that also set it share the port silently; probing
    with a plain socket first keeps the fail-fast behaviour of a single process."""
    if port == 0:
        raise InvalidInput("serving workers > 1 need a fixed gRPC port (DRIFTLOOP_PORTS__SERVING)")
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind(address)
        except OSError as exc:
            raise Unavailable(f"cannot bind gRPC port {host}:{port}: already in use?") from exc


class Workers:
    """The worker processes of one serving parent."""

    def __init__(self, count: int, metrics_dir: Path) -> None:
        self.count = count
        self._metrics_dir = metrics_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        env = {
            **os.environ,
            MULTIPROC_ENV: str(self._metrics_dir),
            "DRIFTLOOP_SERVING_WORKERS": str(self.count),
        }
        for index in range(self.count):
            # Same process group as the parent (a supervisor's killpg reaches them too), and
            # SIGTERM from the kernel should the parent be SIGKILLed (PR_SET_PDEATHSIG).
            proc = subprocess.Popen(worker_argv(index), env=env, preexec_fn=die_with_parent())
            self.procs.append(proc)
            log.info("serving_worker_started", worker=index, pid=proc.pid)

    def pids(self) -> dict[str, int]:
        """worker label -> pid: the parent's own and every worker still running."""
        running = {str(i): p.pid for i, p in enumerate(self.procs) if p.poll() is None}
        return {"parent": os.getpid(), **running}

    def exited(self) -> list[tuple[int, int]]:
        """(index, exit code) of the workers that have exited."""
        return [(i, code) for i, p in enumerate(self.procs) if (code := p.poll()) is not None]

    def signal(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass  # exited between poll and signal

    def stop(self, grace: float = STOP_GRACE_S) -> list[int]:
        """SIGTERM the workers still running, SIGKILL them after `grace`; their exit codes."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for index, proc in enumerate(self.procs):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("serving_worker_killed", worker=index, pid=proc.pid)
                proc.kill()
                proc.wait(5)
            multiprocess.mark_process_dead(proc.pid, str(self._metrics_dir))
        return [int(p.returncode) for p in self.procs]


class WorkerProcessCollector:
    """The standard process_* metrics (CPU, resident memory, open files, ...) of the parent
    and of every running worker, each series labelled `worker` ("parent", "0", "1", ...).
    prometheus-client's multiprocess mode drops process_* metrics, so without this the merged
    endpoint would say nothing of the workers' memory."""

    def __init__(self, pids: Callable[[], dict[str, int]]) -> None:
        self._pids = pids

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for worker, pid in self._pids().items():
            # registry=None: read once here, never registered (reads /proc/<pid>; nothing for
            # a process that is gone)
            for family in ProcessCollector(pid=_constant(pid), registry=None).collect():
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)
        yield from merged.values()


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


def run_parent(common: CommonSettings, count: int) -> int:
    """Start `count` workers and watch them until SIGTERM/SIGINT; the exit code.

    0 after a requested stop that every worker finished cleanly; 1 when a worker exited on
    its own (the others are stopped, so the supervisor restarts serving as a whole)."""
    port = common.ports.grpc("serving")
    check_port_free(common.bind_host, port)
    metrics_dir = Path(tempfile.mkdtemp(prefix="driftloop-serving-metrics-"))
    workers = Workers(count, metrics_dir)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))
    registry.register(WorkerProcessCollector(workers.pids))
    start_http_server(common.ports.metrics("serving"), addr=common.bind_host, registry=registry)
    stopping: list[int] = []

    def _on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        workers.start()
        log.info("serving_workers_started", workers=count, grpc_port=port)
        dead = workers.exited()
        while not stopping and not dead:
            time.sleep(POLL_S)  # poll: wait for a signal or a worker exit
            dead = workers.exited()
        if stopping:
            codes = workers.stop()
            log.info("serving_workers_stopped", exit_codes=codes)
            # -SIGTERM: a worker whose loop had already closed when the signal came again
            return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
        for index, code in dead:
            log.error("serving_worker_exited", worker=index, exit_code=code)
        codes = workers.stop()
        log.error("serving_workers_stopped_after_worker_exit", exit_codes=codes)
        return 1
    finally:
        workers.stop(grace=STOP_GRACE_S)  # no-op unless the loop itself failed
        shutil.rmtree(metrics_dir, ignore_errors=True)
