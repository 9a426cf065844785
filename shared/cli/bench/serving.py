"""`driftloop bench serving`: V2 gRPC throughput and latency of serving with a real trained model,
optionally against another V2 server (--against) and across ten promotions under load (--swap).

The load client runs as its own process (bench_serving_load); the stack is bench_serving_stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

FULL_POINTS = [(c, r) for r in (1, 100) for c in (1, 8, 32, 64)]
QUICK_POINTS = [(1, 1), (32, 1), (32, 100)]
SWAPS = 10
SWAP_LOAD_CONCURRENCY = 8


def command(
    json_out: bool = typer.Option(False, "--json", help="End with one JSON object."),
    quick: bool = typer.Option(False, "--quick", help="Three points, 2 s each (for development)."),
    against: str = typer.Option("", "--against", help="HOST:PORT of another V2 gRPC server."),
    model: str = typer.Option("", "--model", help="Model name on the --against server."),
    swap: bool = typer.Option(False, "--swap", help="Also: ten promotions under steady load."),
    seconds: float = typer.Option(0.0, "--seconds", help="Measured seconds per point."),
    serving_set: list[str] = typer.Option(  # noqa: B008 - typer's way to declare options
        [], "--set", help="Serving setting for this run, e.g. --set max_batch_size=1."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Serving worker processes."),
    connections: int = typer.Option(
        1, "--connections", min=1, help="Client connections (workers share them, not requests)."
    ),
) -> None:
    """Start serving (with broker and registry) on a real trained model and load it over V2."""
    from rich.console import Console

    from driftloop.shared.cli.bench import serving_stack as bench

    if against and not model:
        raise typer.BadParameter("--against needs --model (the model's name on that server)")
    console = Console(stderr=json_out)
    if not console.is_terminal:
        console.width = 140  # a log file or pipe: do not squeeze the table into 80 columns
    points = QUICK_POINTS if quick else FULL_POINTS
    per_point = seconds or (2.0 if quick else 5.0)
    env = {"DRIFTLOOP_SERVING_WORKERS": str(workers), **_serving_env(serving_set)}
    result: dict[str, Any] = {"points": [], "machine_cpus": _cpus(), "serving_settings": env}
    with console.status("starting broker, registry and serving"), bench.running_stack(env) as stack:
        registry = bench.BenchRegistry(stack)
        try:
            registry.create_model()
            pipeline, accuracy = bench.train_bench_model()
            registry.add_version(pipeline, accuracy)
            registry.wait_model()
            for concurrency, rows in points:
                console.log(f"load: concurrency {concurrency}, rows {rows}")
                ours = _load(
                    stack.serving,
                    bench.MODEL,
                    concurrency,
                    rows,
                    per_point,
                    connections=connections,
                )
                theirs = _load(against, model, concurrency, rows, per_point) if against else None
                result["points"].append({"driftloop": ours, "against": theirs})
            if swap:
                console.log(f"swap: {SWAPS} promotions under load")
                result["swap"] = _swaps(registry, stack.serving)
        finally:
            registry.close()
    _flatten(result, against)
    _table(console, result, against)
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")


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


def _load(
    target: str,
    model: str,
    concurrency: int,
    rows: int,
    seconds: float,
    *,
    trace: str = "",
    stop_file: str = "",
    connections: int = 1,
) -> dict[str, Any]:
    """Run the load client process once and return its summary."""
    from driftloop.shared.cli.bench.serving_load import LoadSpec
    from driftloop.shared.cli.bench.serving_stack import FEATURES

    spec = LoadSpec(
        target=target,
        model=model,
        features=len(FEATURES),
        rows=rows,
        concurrency=concurrency,
        seconds=seconds,
        trace=trace,
        stop_file=stop_file,
        connections=connections,
    )
    argv = [
        sys.executable,
        "-m",
        "driftloop.shared.cli.bench.serving_load",
        json.dumps(asdict(spec)),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise typer.Exit(_fail(f"load client against {target} failed:\n{done.stderr[-3000:]}"))
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


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

    load = LoadSpec(features=len(FEATURES), rows=1, seconds=600, **spec)
    argv = [
        sys.executable,
        "-m",
        "driftloop.shared.cli.bench.serving_load",
        json.dumps(asdict(load)),
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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


def _flatten(result: dict[str, Any], against: str) -> None:
    """Top-level keys the issue names: rps_c32_rows1, p99_ms_c32_rows1, against_..., ratios."""
    for point in result["points"]:
        ours, theirs = point["driftloop"], point["against"]
        tag = f"c{ours['concurrency']}_rows{ours['rows']}"
        for key in ("rps", "rows_per_s", "p50_ms", "p90_ms", "p99_ms", "failed"):
            result[f"{key}_{tag}"] = ours[key]
            if theirs is not None:
                result[f"against_{key}_{tag}"] = theirs[key]
        if theirs is not None:
            result[f"ratio_rps_{tag}"] = ours["rps"] / theirs["rps"] if theirs["rps"] else None
            result[f"ratio_p99_{tag}"] = (
                ours["p99_ms"] / theirs["p99_ms"] if theirs["p99_ms"] else None
            )
    if against:
        result["against"] = against
    if "swap" in result:
        swap = result["swap"]
        result["swap_failed_requests"] = swap["failed"]
        result["swap_max_window_p99_ms"] = max((s["p99_ms"] for s in swap["swaps"]), default=0.0)
        result["swap_max_latency_ms"] = max((s["max_ms"] for s in swap["swaps"]), default=0.0)


def _table(console: Any, result: dict[str, Any], against: str) -> None:
    from rich.table import Table

    title = f"driftloop serving, V2 gRPC ({result['machine_cpus']} CPUs)"
    if against:
        title += f" vs {against}"
    table = Table(title=title)
    for col in (
        "server",
        "conc",
        "rows",
        "req/s",
        "rows/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "failed",
    ):
        table.add_column(col, justify="left" if col == "server" else "right")
    if against:
        table.add_column("req/s ratio", justify="right")
        table.add_column("p99 ratio", justify="right")
    for point in result["points"]:
        for name, row in (("driftloop", point["driftloop"]), ("against", point["against"])):
            if row is None:
                continue
            cells = [
                name, str(row["concurrency"]), str(row["rows"]), f"{row['rps']:.0f}",
                f"{row['rows_per_s']:.0f}", f"{row['p50_ms']:.2f}", f"{row['p90_ms']:.2f}",
                f"{row['p99_ms']:.2f}", str(row["failed"]),
            ]  # fmt: skip
            if against:
                tag = f"c{row['concurrency']}_rows{row['rows']}"
                mine = name == "driftloop"
                ratio_rps, ratio_p99 = result[f"ratio_rps_{tag}"], result[f"ratio_p99_{tag}"]
                cells += [
                    f"{ratio_rps:.2f}x" if mine and ratio_rps else "",
                    f"{ratio_p99:.2f}x" if mine and ratio_p99 else "",
                ]
            table.add_row(*cells)
    console.print(table)
    if "swap" in result:
        _swap_table(console, result["swap"])


def _swap_table(console: Any, swap: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title=(
            f"{len(swap['swaps'])} promotions under load: {swap['requests']} requests, "
            f"{swap['failed']} failed; steady p50 {swap['steady_p50_ms']:.2f} ms, "
            f"p99 {swap['steady_p99_ms']:.2f} ms"
        )
    )
    for col in ("version", "swap s", "requests", "failed", "p99 ms", "max ms"):
        table.add_column(col, justify="right")
    for s in swap["swaps"]:
        table.add_row(
            s["version"], f"{s['swap_seconds']:.2f}", str(s["requests"]), str(s["failed"]),
            f"{s['p99_ms']:.2f}", f"{s['max_ms']:.2f}",
        )  # fmt: skip
    console.print(table)
