"""`driftloop bench serving`: V2 gRPC throughput and latency of serving with a real trained model,
optionally against another V2 server (--against), against a null V2 server that answers without a
model (--null, the floor the client and gRPC set), and across ten promotions under load (--swap).

The load client runs as its own process (bench_serving_load); the stack is bench_serving_stack;
the null server is bench_serving_null; the table and the criteria are bench_serving_report.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import typer

from driftloop.shared.cli.children import die_with_parent

FULL_POINTS = [(c, r) for r in (1, 100) for c in (1, 8, 32, 64)]
QUICK_POINTS = [(1, 1), (32, 1), (8, 100)]
STYLES = ("fp32-tensor", "fp64-tensor", "fp32-features", "fp64-features")
"""Request styles: datatype, then one [N, F] tensor named input-0 or one [N] input per feature."""
PRIMARY_STYLE = "fp32-tensor"
"""The common request (tritonclient's): its keys in --json carry no style suffix."""
SWAPS = 10
SWAP_LOAD_CONCURRENCY = 8


def command(
    json_out: bool = typer.Option(False, "--json", help="End with one JSON object."),
    quick: bool = typer.Option(
        False, "--quick", help="Three points, 2 s each, FP32 tensor only (for development)."
    ),
    against: str = typer.Option("", "--against", help="HOST:PORT of another V2 gRPC server."),
    model: str = typer.Option("", "--model", help="Model name on the --against server."),
    null: bool = typer.Option(
        False, "--null", help="Also load a null V2 server (its own process): the floor."
    ),
    styles: str = typer.Option(
        "", "--styles", help=f"Comma-separated request styles (default all: {','.join(STYLES)})."
    ),
    swap: bool = typer.Option(False, "--swap", help="Also: ten promotions under steady load."),
    seconds: float = typer.Option(0.0, "--seconds", help="Measured seconds per point."),
    serving_set: list[str] = typer.Option(  # noqa: B008 - typer's way to declare options
        [], "--set", help="Serving setting for this run, e.g. --set max_batch_size=1."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Serving worker processes."),
    connections: int = typer.Option(
        1, "--connections", min=1, help="Client connections (workers share them, not requests)."
    ),
    only: str = typer.Option(
        "",
        "--points",
        help="Comma-separated CLIENTSxROWS points instead of the default set, e.g. 8x100.",
    ),
) -> None:
    """Start serving (with broker and registry) on a real trained model and load it over V2."""
    from rich.console import Console

    from driftloop.shared.cli.bench import serving_report as report
    from driftloop.shared.cli.bench import serving_stack as bench

    if against and not model:
        raise typer.BadParameter("--against needs --model (the model's name on that server)")
    chosen = _styles(styles, quick)
    console = Console(stderr=json_out)
    if not console.is_terminal:
        console.width = 160  # a log file or pipe: do not squeeze the table into 80 columns
    points = _points(only) if only else QUICK_POINTS if quick else FULL_POINTS
    per_point = seconds or (2.0 if quick else 5.0)
    env = {"DRIFTLOOP_SERVING_WORKERS": str(workers), **_serving_env(serving_set)}
    result: dict[str, Any] = {"points": [], "machine_cpus": _cpus(), "serving_settings": env}
    result["load_average"] = list(_load_average())
    with (
        console.status("starting broker, registry and serving"),
        bench.running_stack(env) as stack,
        null_server() if null else _nothing() as floor,
    ):
        registry = bench.BenchRegistry(stack)
        try:
            registry.create_model()
            pipeline, accuracy = bench.train_bench_model()
            registry.add_version(pipeline, accuracy)
            registry.wait_model()
            for style in chosen:
                for concurrency, rows in points:
                    console.log(f"load: {style}, concurrency {concurrency}, rows {rows}")
                    load = _Load(concurrency, rows, per_point, style)
                    point = {
                        "style": style,
                        "driftloop": load.run(
                            stack.serving, bench.MODEL, connections, pid=stack.procs["serving"].pid
                        ),
                        "against": load.run(against, model) if against else None,
                        "null": load.run(floor.address, bench.MODEL, pid=floor.pid)
                        if floor
                        else None,
                    }
                    result["points"].append(point)
            if swap:
                console.log(f"swap: {SWAPS} promotions under load")
                result["swap"] = _swaps(registry, stack.serving)
        finally:
            registry.close()
    result["load_average_after"] = list(_load_average())
    report.flatten(result, against, PRIMARY_STYLE)
    report.table(console, result, against)
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")


def _styles(value: str, quick: bool) -> list[str]:
    if not value:
        return [PRIMARY_STYLE] if quick else list(STYLES)
    chosen = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STYLES]
    if unknown:
        raise typer.BadParameter(f"--styles {unknown}: choose from {', '.join(STYLES)}")
    return chosen


def _points(value: str) -> list[tuple[int, int]]:
    """`8x100,32x1` as [(8, 100), (32, 1)]: clients, then rows per request."""
    points = []
    for item in (s.strip() for s in value.split(",") if s.strip()):
        clients, sep, rows = item.lower().partition("x")
        if not (sep and clients.isdigit() and rows.isdigit() and int(clients) and int(rows)):
            raise typer.BadParameter(f"--points {item!r}: use CLIENTSxROWS, e.g. 8x100")
        points.append((int(clients), int(rows)))
    return points


def _load_average() -> tuple[float, float, float]:
    import os

    return os.getloadavg()


@dataclass(frozen=True)
class Server:
    address: str
    """host:port"""
    pid: int


@contextmanager
def _nothing() -> Iterator[Server | None]:
    yield None


@contextmanager
def null_server() -> Iterator[Server]:
    """The null V2 server (bench_serving_null) in its own process."""
    argv = [sys.executable, "-m", "driftloop.shared.cli.bench.serving_null"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise typer.Exit(_fail(f"the null server did not start (it said {line!r})"))
        yield Server(f"127.0.0.1:{line}", proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _serving_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--set {pair!r}: use NAME=VALUE (a serving setting)")
        env[f"DRIFTLOOP_SERVING_{name.upper()}"] = value
    return env


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


class _Load:
    """One measured point: a load client process with these settings against one server."""

    def __init__(self, concurrency: int, rows: int, seconds: float, style: str) -> None:
        self.concurrency, self.rows, self.seconds = concurrency, rows, seconds
        self.datatype, _, self.style = style.upper().partition("-")

    def run(self, target: str, model: str, connections: int = 1, pid: int = 0) -> dict[str, Any]:
        """Run the load client process once and return its summary; with the server's `pid`,
        also the CPU time the server (with its child processes) spent per answered request."""
        from driftloop.shared.cli.bench.serving_load import LoadSpec
        from driftloop.shared.cli.bench.serving_stack import FEATURES

        spec = LoadSpec(
            target=target,
            model=model,
            features=len(FEATURES),
            rows=self.rows,
            concurrency=self.concurrency,
            seconds=self.seconds,
            connections=connections,
            datatype=self.datatype,
            style=self.style.lower(),
        )
        argv = [
            sys.executable,
            "-m",
            "driftloop.shared.cli.bench.serving_load",
            json.dumps(asdict(spec)),
        ]
        before = _cpu_seconds(pid)
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=self.seconds + 120,
            preexec_fn=die_with_parent(),
        )
        used = _cpu_seconds(pid) - before
        if done.returncode != 0:
            raise typer.Exit(_fail(f"load client against {target} failed:\n{done.stderr[-3000:]}"))
        summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if pid:
            # why over the whole run: the client's warm-up requests are not in `requests`, so
            # this is a slight overestimate, the same for every server
            summary["cpu_us_per_request"] = 1e6 * used / max(1, summary["all_requests"])
        return summary


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` and its children (0 without a pid)."""
    if not pid:
        return 0.0
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _fail(message: str) -> int:
    sys.stderr.write(message + "\n")
    return 1


def _swaps(registry: Any, target: str) -> dict[str, Any]:
    """Ten promotions (register + promote through the registry) while a steady load runs."""
    import numpy as np

    from driftloop.shared.cli.bench.serving_stack import MODEL, train_bench_model

    models = [train_bench_model(seed=i) for i in range(1, SWAPS + 1)]
    with tempfile.TemporaryDirectory(prefix="driftloop-swap-") as tmp:
        trace, stop = str(Path(tmp) / "trace.npz"), str(Path(tmp) / "stop")
        spec = {
            "target": target, "model": MODEL, "concurrency": SWAP_LOAD_CONCURRENCY,
            "trace": trace, "stop_file": stop,
        }  # fmt: skip
        client = _start_client(spec)
        time.sleep(2.0)  # a timer: let the steady load settle before the first swap
        swaps = []
        for pipeline, accuracy in models:
            started = time.time()
            version = registry.add_version(pipeline, accuracy)
            served = registry.wait_served(version)
            swaps.append({"version": version, "promoted_at": started, "served_at": served})
            time.sleep(1.0)  # a timer: steady load between two swaps
        Path(stop).touch()
        out, err = client.communicate(timeout=60)
        if client.returncode != 0:
            raise typer.Exit(_fail(f"swap load client failed:\n{err[-3000:]}"))
        summary = json.loads(out.strip().splitlines()[-1])
        data = np.load(trace)
        return _swap_report(summary, swaps, data)


def _start_client(spec: dict[str, Any]) -> subprocess.Popen[str]:
    from driftloop.shared.cli.bench.serving_load import LoadSpec
    from driftloop.shared.cli.bench.serving_stack import FEATURES

    load = LoadSpec(features=len(FEATURES), rows=1, seconds=600, datatype="FP32", **spec)
    argv = [
        sys.executable,
        "-m",
        "driftloop.shared.cli.bench.serving_load",
        json.dumps(asdict(load)),
    ]
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent(),
    )


def _swap_report(summary: dict[str, Any], swaps: list[dict[str, Any]], data: Any) -> dict[str, Any]:
    """Failed requests, and per swap the p99/max latency of requests started in its window
    (from the promotion call until 0.25 s after the new version answered) vs the rest."""
    import numpy as np

    starts = data["starts"] + summary["wall_start"]
    latencies, ok = data["latencies_ms"], data["ok"]
    outside = np.ones(len(starts), dtype=bool)
    rows = []
    for s in swaps:
        inside = (starts >= s["promoted_at"]) & (starts <= s["served_at"] + 0.25)
        outside &= ~inside
        window = latencies[inside & ok]
        rows.append(
            {
                "version": s["version"],
                "swap_seconds": s["served_at"] - s["promoted_at"],
                "requests": int(inside.sum()),
                "failed": int((inside & ~ok).sum()),
                "p99_ms": float(np.percentile(window, 99)) if len(window) else 0.0,
                "max_ms": float(window.max()) if len(window) else 0.0,
            }
        )
    steady = latencies[outside & ok]
    versions = sorted({v for v in data["versions"].tolist() if v}, key=int)
    return {
        "requests": summary["requests"],
        "failed": summary["failed"],
        "errors": summary["errors"],
        "rps": summary["rps"],
        "steady_p50_ms": float(np.percentile(steady, 50)) if len(steady) else 0.0,
        "steady_p99_ms": float(np.percentile(steady, 99)) if len(steady) else 0.0,
        "versions_seen": versions,
        "swaps": rows,
    }
