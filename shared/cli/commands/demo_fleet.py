"""`driftloop demo --fleet`: a fleet closes its loop. One spec with `partition_by: [route_id]` on a
transit-like stream (bench/fleet_stream.py: every route its own delay function), the global model
and a model per route trained by themselves, one request answered row by row by each row's route
model, then roadworks on one route: its monitor alone sees it, and only its model is retrained
and redeployed.

The traffic helpers (`fleet_request`, `send_block`) are shared with the fleet e2e test.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.shared import fleet
from driftloop.shared.bus import envelope
from driftloop.shared.cli.bench.fleet_stream import FEATURES, PARTITION, TARGET, FleetStream
from driftloop.shared.cli.bench.loop_driver import ingest_frame, tail_events
from driftloop.shared.grpc.client import aio_channel, auth_metadata
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.registry_types import TrainingSpec
from driftloop.shared.settings import CommonSettings

ANSWERED_BY = "driftloop_answered_by"
"""The V2 response parameter naming every model that answered a fleet request's rows."""
ROUTES = 8
WARM_BLOCKS = 8
MAX_BLOCKS = 200
STREAM = FleetStream(
    routes=ROUTES,
    rows_per_route=40,
    seed=11,
    roadworks_fraction=1 / ROUTES,
    roadworks_at=WARM_BLOCKS + 4,
    weather_at=10_000,
)


def fleet_spec() -> TrainingSpec:
    return TrainingSpec(
        task="regression",
        estimator="ridge",
        partition_by=(PARTITION,),
        features=(PARTITION, *FEATURES),
        min_rows=150,
    )


def fleet_request(model: str, request_id: str, rows: pd.DataFrame) -> v2.ModelInferRequest:
    """One FP64 input per column (the per-feature style), the partition column included."""
    request = v2.ModelInferRequest(model_name=model, id=request_id)
    for column in [c for c in (PARTITION, *FEATURES) if c in rows.columns]:
        values = rows[column].to_numpy(dtype=np.float64)
        tensor = request.inputs.add(name=column, datatype="FP64", shape=[len(values)])
        tensor.contents.fp64_contents.extend(values.tolist())
    return request


def answered_by(reply: v2.ModelInferResponse) -> dict[str, str]:
    return dict(json.loads(reply.parameters[ANSWERED_BY].string_param))


@dataclass
class Block:
    """What one block of live traffic saw."""

    answered_by: dict[str, str]
    predictions: np.ndarray
    truth: np.ndarray
    routes: np.ndarray


async def send_block(
    ingest: ingestion_pb2_grpc.IngestionServiceStub,
    serving: v2_grpc.GRPCInferenceServiceStub,
    name: str,
    block: int,
    meta: Any,
) -> Block:
    """The block's rows predicted through the fleet, their labels through the labels API
    (naming the fleet and the row ids serving logged), the labelled rows through ingestion."""
    rows = STREAM.rows(block)
    request_id = f"{name}-b{block}"
    reply = await serving.ModelInfer(fleet_request(name, request_id, rows))
    labels = ingestion_pb2.IngestLabelsRequest(
        model=name,
        request_ids=[f"{request_id}:{i}" for i in range(len(rows))],
        labels=[repr(float(v)) for v in rows[TARGET]],
    )
    await ingest.IngestLabels(labels, metadata=meta)
    await ingest_frame(ingest, name, rows, meta)
    return Block(
        answered_by(reply),
        np.asarray(reply.outputs[0].contents.fp64_contents),
        rows[TARGET].to_numpy(),
        rows[PARTITION].to_numpy(),
    )


@dataclass
class RouteErrors:
    """Absolute errors of one route's rows, by phase."""

    phases: dict[str, list[float]] = field(default_factory=dict)

    def add(self, phase: str, errors: np.ndarray) -> None:
        self.phases.setdefault(phase, []).extend(errors.tolist())

    def mae(self, phase: str) -> float | None:
        found = self.phases.get(phase)
        return round(float(np.mean(found)), 1) if found else None


class FleetDemo:
    def __init__(self, common: CommonSettings, console: Console) -> None:
        self.common = common
        self.console = console
        self.name = f"arrivals-{secrets.token_hex(2)}"
        self.meta = auth_metadata(common)
        self.events: list[envelope.Envelope] = []

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}")

    async def run(self, timeout: float) -> dict[str, Any]:
        channels = {s: aio_channel(self.common, s) for s in ("ingestion", "serving")}
        self.ingest = ingestion_pb2_grpc.IngestionServiceStub(channels["ingestion"])
        self.serving = v2_grpc.GRPCInferenceServiceStub(channels["serving"])
        self.registry = RegistryClient(self.common)
        tail = asyncio.create_task(tail_events(self.common, self.events))
        try:
            return await asyncio.wait_for(self._story(), timeout)
        except TimeoutError as exc:
            raise TimeoutError(str(exc) or f"the loop did not close within {timeout:.0f}s") from exc
        finally:
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)
            for channel in channels.values():
                await channel.close()
            await self.registry.close()

    async def _story(self) -> dict[str, Any]:
        await self.registry.create_model(self.name, self.name, TARGET, spec=fleet_spec())
        self.say(
            f"fleet [bold]{self.name}[/bold] declared: one ridge regressor per {PARTITION} "
            f"plus a global model; ingesting {WARM_BLOCKS * STREAM.rows_per_block} rows of "
            f"{ROUTES} routes"
        )
        started = time.monotonic()
        for block in range(WARM_BLOCKS):
            await ingest_frame(self.ingest, self.name, STREAM.rows(block), self.meta)
        await self._until(self._all_trained, what="the global model and every route's model")
        self.say(f"fleet trained {time.monotonic() - started:.1f}s after the first row")
        await self._show_partitions()
        (drifted,) = sorted(STREAM.drifted_routes())
        target = fleet.partition_name(self.name, {PARTITION: drifted})
        self.say(f"[yellow]roadworks on route {drifted}[/yellow] from block {STREAM.roadworks_at}")
        errors: dict[int, RouteErrors] = {}
        t_drift, new_version, after, to_serving = 0.0, "", -1, 0.0
        for block in range(WARM_BLOCKS, MAX_BLOCKS):
            if block == STREAM.roadworks_at:
                t_drift = time.monotonic()
            seen = await send_block(self.ingest, self.serving, self.name, block, self.meta)
            version = seen.answered_by.get(target, "")
            phase = "before" if block < STREAM.roadworks_at else "during"
            if new_version:
                phase = "after"
            elif block >= STREAM.roadworks_at and version not in ("", "1"):
                new_version, after, phase = version, block, "after"
                to_serving = time.monotonic() - t_drift
                self.say(
                    f"[green]route {drifted}'s version {version} answering[/green] "
                    f"{to_serving:.1f}s after the roadworks began"
                )
            for route in np.unique(seen.routes):
                rows = seen.routes == route
                errors.setdefault(int(route), RouteErrors()).add(
                    phase, np.abs(seen.predictions[rows] - seen.truth[rows])
                )
            if after >= 0 and block - after >= 4:
                break
            await asyncio.sleep(0.3)  # pacing: the stream's time passes
        return await self._summary(drifted, target, new_version, to_serving, errors)

    async def _all_trained(self) -> bool:
        partitions = await self.registry.list_models(fleet=self.name)
        glob = await self.registry.production(self.name)
        if glob is None or len(partitions) < ROUTES:
            return False
        ready = v2.ModelReadyRequest(name=self.name, version=glob.version)
        return bool((await self.serving.ModelReady(ready)).ready)  # the global model serves

    async def _show_partitions(self) -> None:
        glob = await self.registry.production(self.name)
        table = Table(title=f"fleet {self.name}: the global model serves routes without their own")
        for column in ("model", "production", "holdout MAE (s)", "decision"):
            table.add_column(column)
        assert glob is not None
        table.add_row(self.name, glob.version, f"{glob.metrics['mae']:.1f}", "global model")
        for m in await self.registry.list_models(fleet=self.name):
            version = await self.registry.get_version(m.name, "1")
            table.add_row(
                m.name,
                m.production_version or "- (global)",
                f"{version.metrics['mae']:.1f}",
                version.decision_reason[:70],
            )
        self.console.print(table)

    async def _summary(
        self,
        drifted: int,
        target: str,
        new_version: str,
        to_serving: float,
        errors: dict[int, RouteErrors],
    ) -> dict[str, Any]:
        # a partition whose first candidate was inconclusive against the global model is tried
        # again once its rows have doubled (trigger "auto"): only drift retrains count here
        others = [
            m.name
            for m in await self.registry.list_models(fleet=self.name)
            if m.name != target
            and m.latest_version > 1
            and any(v.lineage.trigger == "drift" for v in await self.registry.list_versions(m.name))
        ]
        named = {
            p
            for e in self.events
            if e.type == "DriftDetected"
            for p in (e.drift_detected.model, *e.drift_detected.partitions)
        }
        route = errors.get(drifted, RouteErrors())
        return {
            "fleet": self.name,
            "routes": ROUTES,
            "drifted_partition": target,
            "new_version": new_version,
            "drift_detected": target in named,
            "other_partitions_retrained": others,
            "mae_before": route.mae("before"),
            "mae_during": route.mae("during"),
            "mae_after": route.mae("after"),
            "drift_to_serving_s": round(to_serving, 1) if new_version else None,
            "loop_closed": bool(new_version) and target in named and not others,
        }

    async def _until(self, probe: Any, *, what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not await probe():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up waiting for {what} after {timeout}s")
            await asyncio.sleep(0.5)  # poll: waiting on the stack


def render(console: Console, summary: dict[str, Any]) -> None:
    if "drifted_partition" in summary:
        console.print(
            f"{summary['drifted_partition']}: MAE before the roadworks {summary['mae_before']}s, "
            f"during (old version) {summary['mae_during']}s, after redeploy (version "
            f"{summary['new_version'] or '-'}) {summary['mae_after']}s; other partitions "
            f"retrained: {summary['other_partitions_retrained'] or 'none'}"
        )
