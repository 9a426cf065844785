"""The parts `driftloop bench ingest` measures with: a broker plus ingestion and validation as
real processes on free ports, the bench data, the three paths (raw broker, gRPC, JSON topic)
and a peak-RSS sampler.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from driftloop.shared.cli.children import die_with_parent
from driftloop.shared.cli.stack.broker import broker_argv, free_port, wait_for_port
from driftloop.shared.errors import Unavailable
from driftloop.shared.manifest import ManifestHead, manifest_head
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.settings import KafkaConnection

if TYPE_CHECKING:
    from driftloop.shared.cli.stack.kafka import LocalKafka

BATCH_ROWS = 5000
JSON_ROWS_PER_MESSAGE = 1000
BAD_ROW_EVERY = 1000
"""One row in this many breaks the declared schema (conservation counts rejected rows too)."""
CATEGORIES = ["red", "green", "blue", "yellow"]
SERVICES = ("ingestion", "validation")


@dataclass
class BenchStack:
    root: Path
    bootstrap: str
    ingestion: str
    validation: str
    pids: dict[str, int]
    logs: dict[str, Path] = field(default_factory=dict)
    embedded: bool = True
    """On the bench's own embedded broker (else on a local Apache Kafka)."""

    def head(self, dataset: str) -> ManifestHead | None:
        return manifest_head(LocalObjectStore(self.root / "objects"), dataset)

    def kafka(self) -> KafkaConnection:
        """Plaintext; idempotent producers where Kafka grants them, as the services use them
        (the embedded broker refuses them)."""
        return KafkaConnection(
            bootstrap=self.bootstrap, idempotent=False if self.embedded else None
        )


def bench_table(rows: int, seed: int = 7) -> pa.Table:
    """20 mixed-type columns: an id, 8 floats, 5 ints, 4 strings, 2 bools; a few bad rows."""
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {"row_id": np.arange(rows, dtype=np.int64)}
    for i in range(8):
        cols[f"f{i}"] = rng.normal(size=rows)
    for i in range(5):
        cols[f"i{i}"] = rng.integers(0, 1000, rows)
    for i in range(4):
        cols[f"s{i}"] = pa.array(np.array(CATEGORIES)[rng.integers(0, 4, rows)])
    for i in range(2):
        cols[f"b{i}"] = rng.random(rows) > 0.5
    cols["i0"][::BAD_ROW_EVERY] = 5000  # above the declared max: rejected with a reason
    return pa.table(cols)


def bench_schema_columns() -> list[dict[str, Any]]:
    columns: list[dict[str, Any]] = [{"name": "row_id", "type": "int", "required": True}]
    columns += [{"name": f"f{i}", "type": "float", "min": -100, "max": 100} for i in range(8)]
    columns += [{"name": f"i{i}", "type": "int", "min": 0, "max": 1000} for i in range(5)]
    columns += [{"name": f"s{i}", "type": "string", "categories": CATEGORIES} for i in range(4)]
    columns += [{"name": f"b{i}", "type": "bool"} for i in range(2)]
    return columns


def expected_rejected(rows: int) -> int:
    return len(range(0, rows, BAD_ROW_EVERY))


@contextmanager
def running_stack(
    root: Path, env_extra: dict[str, str] | None = None, kafka: LocalKafka | None = None
) -> Iterator[BenchStack]:
    """Broker, topics, ingestion and validation (python -m ...) on free ports; always stopped.
    With `kafka`, that broker instead of an embedded one, its topics deleted afterwards."""
    from driftloop.shared.bus.topics import ensure_topics

    procs: list[subprocess.Popen[bytes]] = []
    try:
        if kafka is None:
            port = free_port()
            procs.append(_spawn(broker_argv(port), {}, root / "broker.log"))
            wait_for_port("127.0.0.1", port, timeout=30)
            bootstrap = f"127.0.0.1:{port}"
        else:
            bootstrap = kafka.bootstrap
        asyncio.run(ensure_topics(bootstrap))
        ports = {s: free_port() for s in SERVICES}
        env = {
            "DRIFTLOOP_DATA_DIR": str(root),
            "DRIFTLOOP_KAFKA_BOOTSTRAP": bootstrap,
            **({"DRIFTLOOP_KAFKA__IDEMPOTENT": "false"} if kafka is None else {}),
            "DRIFTLOOP_LOG_LEVEL": "warning",
            "DRIFTLOOP_LOG_JSON": "true",
            **{f"DRIFTLOOP_PORTS__{s.upper()}": str(p) for s, p in ports.items()},
            **{f"DRIFTLOOP_PORTS__METRICS_{s.upper()}": str(free_port()) for s in SERVICES},
            **(env_extra or {}),
        }
        pids = {"broker": procs[0].pid if kafka is None else kafka.pid or 0}
        for service in SERVICES:
            argv = [sys.executable, "-m", f"driftloop.services.{service}"]
            proc = _spawn(argv, env, root / f"{service}.log")
            procs.append(proc)
            pids[service] = proc.pid
        for service in SERVICES:
            wait_for_port("127.0.0.1", ports[service], timeout=60)
        yield BenchStack(
            root,
            bootstrap,
            f"127.0.0.1:{ports['ingestion']}",
            f"127.0.0.1:{ports['validation']}",
            pids,
            embedded=kafka is None,
        )
    finally:
        for proc in reversed(procs):
            _stop(proc)
        if kafka is not None:
            kafka.delete_topics()  # the next run starts from none, as on a fresh broker


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class RssSampler:
    """Samples the resident set size of some processes every 50 ms; keeps each one's peak."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak_mb: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.05):
            for name, proc in self._procs.items():
                try:
                    rss = proc.memory_info().rss / 1e6
                except psutil.Error:
                    continue
                self.peak_mb[name] = max(self.peak_mb[name], rss)


class CpuMeter:
    """CPU seconds (user + system) each process used between start() and stop(); the bench
    client is this process ("client")."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._procs["client"] = psutil.Process(os.getpid())
        self._start: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        import psutil

        out = {}
        for name, proc in self._procs.items():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            out[name] = times.user + times.system
        return out

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> None:
        now = self._now()
        self.seconds = {n: now[n] - self._start[n] for n in self._start if n in now}

    def per_million(self, rows: int) -> dict[str, float]:
        per = {n: round(s / rows * 1e6, 2) for n, s in self.seconds.items()}
        per["total"] = round(sum(self.seconds.values()) / rows * 1e6, 2)
        return per


def wait_accounted(stack: BenchStack, dataset: str, rows: int, timeout: float) -> ManifestHead:
    """Poll the manifest pointer until every row is curated or rejected."""
    deadline = time.monotonic() + timeout
    while True:
        head = stack.head(dataset)
        if head is not None and head.total_rows + head.rows_rejected >= rows:
            return head
        if time.monotonic() > deadline:
            raise Unavailable(f"dataset {dataset}: only {head} accounted after {timeout}s")
        time.sleep(0.02)  # poll: the pipeline is still working


def json_messages(table: pa.Table, limit: int = 20) -> list[bytes]:
    """Up to `limit` distinct JSON-array messages of JSON_ROWS_PER_MESSAGE rows (cycled)."""
    out = []
    for start in range(
        0, min(table.num_rows, limit * JSON_ROWS_PER_MESSAGE), JSON_ROWS_PER_MESSAGE
    ):
        rows = table.slice(start, JSON_ROWS_PER_MESSAGE).to_pylist()
        out.append(json.dumps(rows, separators=(",", ":")).encode())
    return out
