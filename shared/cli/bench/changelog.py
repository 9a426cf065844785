"""`driftloop bench changelog`: what monitoring's changelog of predictions awaiting labels costs.

Monitoring writes every prediction that awaits its label to the compacted topic
driftloop.monitoring.pending, and commits a poll of driftloop.predictions only once the broker
acknowledged those records (services/monitoring/adapters/changelog.py). There is no setting to
turn it off; the seam is the handler's `changelog` (None: no changelog, monitors that journal
nothing). This bench runs the real MonitoringHandler behind the real EventConsumer over the same
stream of prediction logs, already on the broker, with the changelog off then on (alternating
which goes first, round by round), and reports the logs/s each absorbs: handled, changelog
acknowledged and committed. The baseline is the same stream without the changelog, measured in
the same run on the same broker.

In process: a fresh broker (embedded, or Apache Kafka from `make kafka`), stationary logs of
models whose reference is served from memory (no registry, no drift), no labels (every
prediction stays pending, as it does until its label arrives). Only the changelog's restore at
start is left out (it reads the records of the earlier rounds; a restart's cost, not a log's).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer

from driftloop.shared.cli.bench.brokers import HELP as BROKER_HELP

MODES = ("off", "on")
FEATURES = 4


def command(
    json_out: bool = typer.Option(False, "--json", help="End with one JSON object."),
    logs: int = typer.Option(2000, "--logs", min=1, help="Prediction logs in the stream."),
    rows: int = typer.Option(50, "--rows", min=1, help="Rows (predictions) per log."),
    models: int = typer.Option(4, "--models", min=1, help="Models the logs are spread over."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Runs of each mode (off and on)."),
    broker: str = typer.Option("embedded", "--broker", help=BROKER_HELP),
) -> None:
    """Prediction logs/s monitoring absorbs with its changelog of pending predictions on vs
    off (the baseline), on the same stream and broker in one run."""
    from rich.console import Console

    from driftloop.shared import logging
    from driftloop.shared.cli.bench.brokers import brokers_of, embedded_broker, local_kafka

    names = brokers_of(broker)
    console = Console(stderr=json_out)
    # the handler's own lines (references loaded, consumer ready) on stderr, warnings only
    logging.configure("bench-changelog", json=False, level="warning")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-changelog-") as tmp:
        for name in names:
            with ExitStack() as up:
                if name == "kafka":
                    bootstrap = up.enter_context(local_kafka(Path(tmp), console.log)).bootstrap
                else:
                    bootstrap = up.enter_context(embedded_broker(Path(tmp) / "tansu.log"))
                console.log(f"{name}: {logs:,} logs x {rows} rows over {models} models")
                results[name] = asyncio.run(
                    _measure(console, name, bootstrap, logs, rows, models, rounds)
                )
    _render(console, results, logs, rows)
    if json_out:
        out = {"logs": logs, "rows_per_log": rows, "models": models, "rounds": rounds, **results}
        print(json.dumps(out))  # noqa: T201 - the benchmark's machine-readable last line


async def _measure(
    console: Any, name: str, bootstrap: str, logs: int, rows: int, models: int, rounds: int
) -> dict[str, Any]:
    from driftloop.shared.bus import topics
    from driftloop.shared.cli.bench.brokers import connection_to

    kafka = connection_to(name, bootstrap)
    await topics.ensure_topics(kafka)
    source = _Profiles([f"bench-m{i}" for i in range(models)])
    await _produce(kafka, source.models, logs, rows)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for i in range(rounds):
        order = MODES if i % 2 == 0 else MODES[::-1]
        for mode in order:
            found = await _absorb(kafka, source, logs, f"bench-changelog-{i}-{mode}", mode == "on")
            console.log(
                f"{name} round {i + 1}/{rounds}, changelog {mode}: "
                f"{found['logs_per_s']:,.0f} logs/s ({found['changelog_records']:,} records)"
            )
            runs[mode].append(found)
    median = {mode: statistics.median(r["logs_per_s"] for r in runs[mode]) for mode in MODES}
    return {
        "logs_per_s_off": round(median["off"], 1),
        "logs_per_s_on": round(median["on"], 1),
        "ratio_on_off": round(median["on"] / median["off"], 3),
        "rows_per_s_on": round(median["on"] * rows, 1),
        "changelog_records_per_run": runs["on"][0]["changelog_records"],
        "cpu_s_per_1k_logs_off": round(
            statistics.median(r["cpu_s_per_1k"] for r in runs["off"]), 3
        ),
        "cpu_s_per_1k_logs_on": round(statistics.median(r["cpu_s_per_1k"] for r in runs["on"]), 3),
        "runs": runs,
    }


class _Profiles:
    """The reference source: every model's production version "1", its profile built once
    from stationary rows (the logs are drawn from the same distribution: no drift)."""

    def __init__(self, models: list[str]) -> None:
        from driftloop.shared.profile import build_profile

        self.models = models
        frame = _frame(4000, seed=0)
        self._profiles = {
            m: build_profile(m, "1", frame.drop(columns="_prediction"), frame["_prediction"])
            for m in models
        }

    async def production_versions(self) -> dict[str, str]:
        return dict.fromkeys(self.models, "1")

    async def production_version(self, model: str) -> str | None:
        return "1" if model in self._profiles else None

    async def profile(self, model: str, version: str) -> Any:
        return self._profiles[model]


def _frame(n: int, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(0.0, 1.0, n) for i in range(FEATURES)})
    frame["_prediction"] = np.where(frame["x0"] > 0, "1", "0")
    return frame


async def _produce(kafka: Any, models: list[str], logs: int, rows: int) -> None:
    """The stream: `logs` prediction logs of `rows` rows, round-robin over the models, every
    row with its own request id."""
    import numpy as np
    import pyarrow as pa

    from driftloop.protos.events.v1 import events_pb2
    from driftloop.shared.bus import topics
    from driftloop.shared.bus.publisher import EventPublisher
    from driftloop.shared.records import table_to_ipc

    publisher = EventPublisher(kafka, "bench-serving")
    await publisher.start()
    try:
        frame = _frame(logs * rows, seed=1)
        frame["_request_id"] = [f"req-{i:09d}" for i in range(len(frame))]
        frame["_ts"] = 1_000.0 + np.arange(len(frame)) * 0.01
        for i in range(logs):
            model = models[i % len(models)]
            part = frame.iloc[i * rows : (i + 1) * rows]
            log = events_pb2.PredictionLog(
                model=model,
                version="1",
                row_count=rows,
                arrow_ipc=table_to_ipc(pa.Table.from_pandas(part, preserve_index=False)),
            )
            await publisher.publish(topics.PREDICTIONS, model, publisher.event(log))
    finally:
        await publisher.stop()


async def _absorb(
    kafka: Any, source: _Profiles, logs: int, group: str, with_changelog: bool
) -> dict[str, Any]:
    """One run: a fresh consumer group reads the whole stream into a fresh handler; seconds
    from the first poll handed to the handler to the last log handled, acknowledged (the
    changelog's records) and committed."""
    from driftloop.services.monitoring.adapters.changelog import PendingChangelog
    from driftloop.services.monitoring.adapters.kafka import MonitoringHandler
    from driftloop.services.monitoring.core.monitors import ModelMonitors
    from driftloop.services.monitoring.settings import MonitoringSettings
    from driftloop.shared.bus import topics
    from driftloop.shared.bus.consumer import EventConsumer
    from driftloop.shared.bus.publisher import EventPublisher

    class _WriteOnly(PendingChangelog):
        async def read(self) -> dict[str, Any]:
            return {}  # the earlier rounds' records: a restart's restore, not this run's cost

    settings = MonitoringSettings()
    monitors = ModelMonitors(settings.policy(), settings.policies(), journal=with_changelog)
    publisher = EventPublisher(kafka, "bench-monitoring")
    await publisher.start()
    changelog = _WriteOnly(kafka, client_id="bench-monitoring") if with_changelog else None
    handler = MonitoringHandler(monitors, publisher, source, changelog=changelog)
    await handler.reconcile()
    handled = 0
    done = asyncio.Event()
    started: list[float] = []

    async def settled(tail: Any, count: int) -> None:
        nonlocal handled
        if tail is not None:
            await tail
        handled += count
        if handled >= logs:
            done.set()

    async def on_batch(records: list[Any]) -> Any:
        if not started:
            started.append(time.perf_counter())
            started.append(time.process_time())
        return settled(await handler.handle_records(records), len(records))

    consumer = EventConsumer(
        bootstrap=kafka,
        group=group,
        topic_names=[topics.PREDICTIONS],
        publisher=publisher,
        on_batch=on_batch,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
        seconds = time.perf_counter() - started[0]
        cpu = time.process_time() - started[1]
    finally:
        await consumer.stop()
        await task
        await handler.close()
        await publisher.stop()
    return {
        "seconds": round(seconds, 3),
        "logs_per_s": round(logs / seconds, 1),
        "cpu_s_per_1k": round(cpu / logs * 1000, 3),
        "changelog_records": changelog.written if changelog is not None else 0,
    }


def _render(console: Any, results: dict[str, Any], logs: int, rows: int) -> None:
    from rich.table import Table

    table = Table(title=f"monitoring changelog cost: {logs:,} prediction logs of {rows} rows")
    for column in (
        "broker",
        "logs/s off",
        "logs/s on",
        "on / off",
        "records per run",
        "CPU-s/1k logs off",
        "CPU-s/1k logs on",
    ):
        table.add_column(column, justify="right")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['logs_per_s_off']:,.0f}",
            f"{r['logs_per_s_on']:,.0f}",
            f"{r['ratio_on_off']:.2f}",
            f"{r['changelog_records_per_run']:,}",
            f"{r['cpu_s_per_1k_logs_off']:.3f}",
            f"{r['cpu_s_per_1k_logs_on']:.3f}",
        )
    console.print(table)
