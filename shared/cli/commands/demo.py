"""`driftloop demo`: start the embedded stack, train v1, drift the data, watch the loop close.

Everything is real: the services run as processes, the drift is in the generated data, the
monitor detects it with its statistical tests, training refits on the new rows and serving swaps
in the new version. The demo only sends traffic and reads what happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from google.protobuf import struct_pb2
from rich.console import Console
from rich.table import Table

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.protos.training.v1 import training_pb2, training_pb2_grpc
from driftloop.shared.bus import connection, envelope, topics
from driftloop.shared.cli.children import die_with_parent
from driftloop.shared.cli.commands.demo_data import FEATURES, TARGET, make_rows
from driftloop.shared.cli.partitions import every_partition
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.cli.stack.broker import free_port
from driftloop.shared.grpc.client import aio_channel, auth_metadata
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.settings import CommonSettings, Ports

TRAIN_ROWS = 2000
BATCH = 10


@dataclass
class Served:
    version: str
    correct: int


@dataclass
class Traffic:
    results: list[Served] = field(default_factory=list)

    def accuracy(self, version: str | None = None) -> float:
        picked = [r for r in self.results if version is None or r.version == version]
        rows = len(picked) * BATCH
        return round(sum(r.correct for r in picked) / rows, 4) if rows else float("nan")


class Demo:
    def __init__(self, common: CommonSettings, console: Console, rate: int) -> None:
        self.common = common
        self.console = console
        self.rate = rate
        self.rng = np.random.default_rng(7)
        self.name = f"demo-{secrets.token_hex(2)}"
        self.events: list[tuple[float, str, envelope.Envelope]] = []
        self.meta = auth_metadata(common)

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}")

    async def run(self, timeout: float) -> dict[str, Any]:
        channels = {s: aio_channel(self.common, s) for s in ("ingestion", "training", "serving")}
        self.ingest = ingestion_pb2_grpc.IngestionServiceStub(channels["ingestion"])
        self.registry = RegistryClient(self.common)
        self.training = training_pb2_grpc.TrainingServiceStub(channels["training"])
        self.serving = v2_grpc.GRPCInferenceServiceStub(channels["serving"])
        tail = asyncio.create_task(self._tail_events())
        try:
            return await asyncio.wait_for(self._story(), timeout)
        except TimeoutError as exc:
            raise TimeoutError(str(exc) or f"the loop did not close within {timeout:.0f}s") from exc
        finally:
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)
            for ch in channels.values():
                await ch.close()
            await self.registry.close()

    async def _story(self) -> dict[str, Any]:
        await self.registry.create_model(self.name, self.name, TARGET)
        self.say(
            f"model [bold]{self.name}[/bold] declared; ingesting {TRAIN_ROWS} labelled rows "
            "(training starts by itself once enough rows are curated)"
        )
        t_train = time.monotonic()
        for _ in range(TRAIN_ROWS // 500):
            await self._ingest(make_rows(500, drifted=False, rng=self.rng))
        first = await self._until(self._production_version, what="a first production version")
        await self._until(self._serving_version, first, what=f"version {first} serving")
        self.say(
            f"version {first} trained, promoted and serving "
            f"{time.monotonic() - t_train:.1f}s after the first row"
        )

        before = Traffic()
        await self._traffic(before, rows=800, drifted=False)
        self.say(f"live traffic on version {first}: accuracy {before.accuracy():.3f}")

        self.say("[yellow]shifting the data[/yellow] (x0 moves by 2 sd and the boundary follows)")
        t0_wall, t0 = time.time(), time.monotonic()
        during = Traffic()
        while not any(r.version != first for r in during.results[-5:]):
            await self._traffic(during, rows=BATCH * 5, drifted=True)
        drift_to_serving = time.monotonic() - t0
        second = next(r.version for r in during.results if r.version != first)
        self.say(
            f"[green]version {second} answering[/green] {drift_to_serving:.1f}s after the shift"
        )

        after = Traffic()
        await self._traffic(after, rows=800, drifted=True)
        return {
            "model": self.name,
            "loop_closed": after.accuracy(second) > during.accuracy(first),
            "versions": sorted(
                {r.version for r in before.results + during.results + after.results}, key=int
            ),
            "drift_to_serving_s": round(drift_to_serving, 2),
            "accuracy_before_drift": before.accuracy(),
            "accuracy_during_drift": during.accuracy(first),
            "accuracy_after_redeploy": after.accuracy(),
            "timeline": await self._timeline(t0_wall, second),
        }

    async def _until(self, probe: Any, *args: Any, what: str, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := await probe(*args)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up waiting for {what} after {timeout}s")
            await asyncio.sleep(0.2)  # poll: waiting on the stack
        return found

    async def _production_version(self) -> str:
        found = await self.registry.production(self.name)
        return found.version if found is not None else ""

    async def _serving_version(self, version: str) -> bool:
        reply = await self.serving.ModelReady(v2.ModelReadyRequest(name=self.name, version=version))
        return reply.ready

    async def _ingest(self, frame: pd.DataFrame) -> None:
        rows = []
        for record in frame.to_dict(orient="records"):
            s = struct_pb2.Struct()
            s.update(record)
            rows.append(s)
        await self.ingest.Ingest(
            ingestion_pb2.IngestRequest(dataset=self.name, rows=rows), metadata=self.meta
        )

    async def _traffic(self, sink: Traffic, *, rows: int, drifted: bool) -> None:
        """Send `rows` live rows in requests of BATCH, paced at the demo's rate; every row is
        also ingested with its label, as a real system would feed back ground truth."""
        interval = BATCH / self.rate
        for _ in range(rows // BATCH):
            started = time.monotonic()
            frame = make_rows(BATCH, drifted=drifted, rng=self.rng)
            reply, _ = await asyncio.gather(
                self.serving.ModelInfer(self._request(frame)), self._ingest(frame)
            )
            labels = [b.decode() for b in reply.outputs[0].contents.bytes_contents]
            correct = int(sum(a == b for a, b in zip(labels, frame[TARGET], strict=True)))
            sink.results.append(Served(reply.model_version, correct))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))  # pacing

    def _request(self, frame: pd.DataFrame) -> v2.ModelInferRequest:
        request = v2.ModelInferRequest(model_name=self.name, id=secrets.token_hex(8))
        for name in FEATURES:
            tensor = request.inputs.add(name=name, shape=[len(frame)])
            if name == "segment":
                tensor.datatype = "BYTES"
                tensor.contents.bytes_contents.extend(v.encode() for v in frame[name])
            else:
                tensor.datatype = "FP64"
                tensor.contents.fp64_contents.extend(frame[name].tolist())
        request.outputs.add(name="label")
        return request

    async def _tail_events(self) -> None:
        kafka = self.common.kafka_connection()
        consumer = connection.consumer(kafka)
        await connection.start(consumer, kafka)
        try:
            names = [topics.DRIFT, topics.MODELS, topics.DEPLOYMENTS]
            consumer.assign(await every_partition(kafka, names))
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        try:
                            self.events.append((time.time(), r.topic, envelope.decode(r.value)))
                        except Exception:  # noqa: BLE001 - the demo only reads what it can
                            continue
        finally:
            await consumer.stop()

    async def _timeline(self, t0: float, version: str) -> list[dict[str, Any]]:
        """Loop steps after the shift, from the events and the training run, in seconds."""

        def first(kind: str, **match: str) -> envelope.Envelope | None:
            for _, _, e in self.events:
                p = envelope.payload(e)
                if (
                    e.type == kind
                    and e.occurred_at.ToDatetime().timestamp() >= t0 - 1
                    and all(getattr(p, k) == v for k, v in match.items())
                ):
                    return e
            return None

        steps: list[dict[str, Any]] = [{"step": "first drifted record sent", "at_s": 0.0}]
        drift = first("DriftDetected", model=self.name)
        if drift is not None:
            steps.append(
                {
                    "step": "drift detected",
                    "at_s": _since(drift, t0),
                    "detail": _drift_detail(drift),
                }
            )
        runs = await self.training.ListRuns(training_pb2.ListRunsRequest(model=self.name))
        run = next((r for r in runs.runs if r.trigger == "drift"), None)
        if run is not None and run.started_at.seconds:
            steps.append(
                {
                    "step": "retraining started",
                    "at_s": round(run.started_at.ToDatetime().timestamp() - t0, 2),
                    "detail": f"run {run.run_id}",
                }
            )
            steps.append(
                {
                    "step": "retraining finished",
                    "at_s": round(run.finished_at.ToDatetime().timestamp() - t0, 2),
                    "detail": f"fit {run.fit_seconds:.2f}s on {run.training_rows} rows; "
                    f"{dict(run.metrics)}",
                }
            )
        promoted = first("ModelPromoted", model=self.name, version="2")
        if promoted is not None:
            steps.append(
                {
                    "step": "version 2 promoted",
                    "at_s": _since(promoted, t0),
                    "detail": promoted.model_promoted.reason,
                }
            )
        deployed = first("ModelDeployed", model=self.name, version="2")
        if deployed is not None:
            steps.append(
                {
                    "step": "version 2 deployed",
                    "at_s": _since(deployed, t0),
                    "detail": f"load {deployed.model_deployed.load_seconds:.2f}s",
                }
            )
        return steps


def _since(event: envelope.Envelope, t0: float) -> float:
    return round(event.occurred_at.ToDatetime().timestamp() - t0, 2)


def _drift_detail(event: envelope.Envelope) -> str:
    d = event.drift_detected
    hit = [f"{f.feature} ({f.test} p={f.p_value:.1e})" for f in d.features if f.drifted]
    return f"{', '.join(hit)}; window of {d.live_rows} rows"


def _ports() -> Ports:
    """The default ports when they are free, otherwise free ones (the demo runs its own stack)."""
    defaults = Ports()
    try:
        for port in defaults.model_dump().values():
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        return defaults
    except OSError:
        return Ports(**{k: free_port() for k in Ports.model_fields})


def _start_stack(data_dir: Path, ports: Ports) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DRIFTLOOP_DATA_DIR": str(data_dir)}
    env.update({f"DRIFTLOOP_PORTS__{k.upper()}": str(v) for k, v in ports.model_dump().items()})
    log_path = data_dir / "logs" / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "driftloop.shared.cli", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # `up` stops its services when the demo is killed
        )


def run_demo(
    console: Console,
    *,
    data_dir: Path | None,
    as_json: bool,
    rows_per_second: int,
    timeout: float,
    fleet: bool = False,
) -> bool:
    data_dir = (data_dir or Path(tempfile.mkdtemp(prefix="driftloop-demo-"))).resolve()
    ports = _ports()
    common = CommonSettings(data_dir=data_dir, ports=ports)
    console.print(f"[bold]driftloop demo[/bold]: starting the embedded stack in {data_dir}")
    proc = _start_stack(data_dir, ports)
    summary: dict[str, Any] = {"loop_closed": False}
    try:
        started = time.monotonic()
        found = None
        while found is None or found.get("pid") != proc.pid:
            if proc.poll() is not None or time.monotonic() - started > 120:
                raise RuntimeError(f"the stack did not start; see {data_dir / 'logs'}")
            time.sleep(0.2)  # poll: waiting for endpoints.json
            found = stack.read_endpoints(common)
        stack.wait_healthy(common, timeout=120, alive=lambda: proc.poll() is None)
        console.print(
            f"stack healthy in {time.monotonic() - started:.1f}s "
            f"(broker {common.bootstrap()}, serving {common.address('serving')})"
        )
        if fleet:
            from driftloop.shared.cli.commands.demo_fleet import FleetDemo

            summary = asyncio.run(FleetDemo(common, console).run(timeout))
        else:
            summary = asyncio.run(Demo(common, console, rows_per_second).run(timeout))
    except Exception as exc:  # noqa: BLE001 - report any failure as "loop not closed"
        console.print(f"[red]demo failed:[/red] {type(exc).__name__}: {exc}")
        summary["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    _render(console, summary)
    if as_json:
        console.print(json.dumps(summary), soft_wrap=True, highlight=False)
    return bool(summary.get("loop_closed"))


def _render(console: Console, summary: dict[str, Any]) -> None:
    if "drifted_partition" in summary:
        from driftloop.shared.cli.commands.demo_fleet import render

        render(console, summary)
    if "timeline" in summary:
        table = Table(title="the loop, after the data shifted")
        table.add_column("t+ (s)", justify="right")
        table.add_column("step")
        table.add_column("detail")
        for step in summary["timeline"]:
            table.add_row(f"{step['at_s']:.2f}", step["step"], step.get("detail", ""))
        console.print(table)
        console.print(
            f"accuracy: before drift {summary['accuracy_before_drift']}, during drift (v1) "
            f"{summary['accuracy_during_drift']}, after redeploy (v2) "
            f"{summary['accuracy_after_redeploy']}; versions served {summary['versions']}"
        )
    verdict = (
        "[green]loop closed[/green]" if summary.get("loop_closed") else "[red]loop NOT closed[/red]"
    )
    console.print(verdict)
