"""The recovery benchmark's driver: one model per stream on a running stack, version 1 trained on
each stream's pre-drift rows, then every stream's live rows sent as prediction traffic at a steady
rate, labels fed back `label_delay` rows late (the labels API for the monitor, labelled rows
through ingestion for training), and what serving answered recorded row by row."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pandas as pd

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.protos.training.v1 import training_pb2, training_pb2_grpc
from driftloop.shared.bus import envelope
from driftloop.shared.cli.bench.loop_driver import ingest_frame, tail_events
from driftloop.shared.cli.bench.recovery_metrics import TARGET
from driftloop.shared.cli.bench.recovery_streams import Stream
from driftloop.shared.grpc.client import aio_channel, auth_metadata
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.registry_types import AliasChange, ModelVersion, TrainingSpec
from driftloop.shared.settings import CommonSettings
from driftloop.shared.timestamps import seconds_or_none

BATCH = 10
"""Rows per prediction request."""
LABEL_CHUNK = 50
"""Labels (and labelled rows) are sent once this many are due."""


@dataclass
class Served:
    """What serving answered for each live row of one stream, in order."""

    versions: list[str] = field(default_factory=list)
    """Version that answered the row ("" when the request failed)."""
    predictions: list[str] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    failed_requests: int = 0
    failed_label_calls: int = 0
    """IngestLabels or Ingest calls that failed (their labels, or rows, never arrived)."""

    def add(self, version: str, predictions: list[str], at: float) -> None:
        self.versions += [version] * len(predictions)
        self.predictions += predictions
        self.answered_at += [at] * len(predictions)


@dataclass(frozen=True)
class Run:
    created_at: float
    trigger: str
    version: str
    promoted: bool
    reason: str


@dataclass(frozen=True)
class Records:
    """The platform's own account of one model: drift events, training runs, production moves."""

    detections: list[float]
    runs: list[Run]
    moves: list[AliasChange]
    versions: dict[str, ModelVersion]
    labels_joined: int = 0
    """Labels the monitor joined to a prediction of the version serving at the end."""
    labels_unmatched: int = 0


def request_id(model: str, first: int) -> str:
    """The id of the request whose first live row is `first`."""
    return f"{model}-{first}"


def row_request_id(model: str, row: int, total: int, batch: int = BATCH) -> str:
    """The id serving logs for live row `row`: its request's id, and ":<i>" per row when the
    request holds several (services/serving/core/prediction_log.py)."""
    first = row - row % batch
    base = request_id(model, first)
    return base if min(batch, total - first) == 1 else f"{base}:{row - first}"


class RecoveryDriver:
    def __init__(
        self, common: CommonSettings, streams: list[Stream], *, rate: float, label_delay: int
    ) -> None:
        self.common = common
        self.streams = streams
        self.rate = rate
        self.label_delay = label_delay
        prefix = f"rec-{secrets.token_hex(2)}"
        self.models = {s.name: f"{prefix}-{s.name}" for s in streams}
        self.served = {s.name: Served() for s in streams}
        self.events: list[envelope.Envelope] = []
        self.meta = auth_metadata(common)
        self.traffic_started = 0.0

    async def __aenter__(self) -> RecoveryDriver:
        self._channels = {
            s: aio_channel(self.common, s)
            for s in ("ingestion", "training", "serving", "monitoring")
        }
        self.ingest = ingestion_pb2_grpc.IngestionServiceStub(self._channels["ingestion"])
        self.training = training_pb2_grpc.TrainingServiceStub(self._channels["training"])
        self.serving = v2_grpc.GRPCInferenceServiceStub(self._channels["serving"])
        self.monitoring = monitoring_pb2_grpc.MonitoringServiceStub(self._channels["monitoring"])
        self.registry = RegistryClient(self.common)
        self._tail = asyncio.create_task(tail_events(self.common, self.events))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._tail.cancel()
        await asyncio.gather(self._tail, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close()
        await self.registry.close()

    async def declare(self) -> TrainingSpec:
        """A model per stream (its features declared, everything else the defaults), its
        pre-drift rows ingested in one call; returns the spec the registry filled in."""
        for stream in self.streams:
            model = self.models[stream.name]
            spec = TrainingSpec(features=stream.features)
            await self.registry.create_model(model, model, TARGET, spec=spec)
            await ingest_frame(self.ingest, model, stream.train, self.meta)
        return (await self.registry.get_model(self.models[self.streams[0].name])).spec

    async def first_versions(self, timeout: float) -> None:
        """Wait until every model answers (version 1 trained, promoted and served)."""
        deadline = time.monotonic() + timeout
        waiting = set(self.models)
        while waiting:
            for name in sorted(waiting):
                stream = next(s for s in self.streams if s.name == name)
                if await self._answers(stream):
                    waiting.discard(name)
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"no version served within {timeout:.0f}s for {sorted(waiting)}")
            await asyncio.sleep(0.5)  # poll: waiting for the first deployments

    async def _answers(self, stream: Stream) -> bool:
        features = list(stream.features)
        request = self._request(
            self.models[stream.name], "probe", features, stream.train[features].to_numpy()[:1]
        )
        try:
            reply = await self.serving.ModelInfer(request, timeout=5)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.model_version)

    async def run(self) -> None:
        """Every stream's live rows, concurrently, each at `rate` rows per second."""
        self.traffic_started = time.time()
        await asyncio.gather(*(self._drive(s) for s in self.streams))

    async def _drive(self, stream: Stream) -> None:
        model = self.models[stream.name]
        features = list(stream.features)
        values = stream.live[features].to_numpy()
        served = self.served[stream.name]
        loop = asyncio.get_running_loop()
        interval = BATCH / self.rate
        next_at = loop.time()
        released = 0
        total = len(values)
        for first in range(0, total, BATCH):
            rows = values[first : first + BATCH]
            request = self._request(model, request_id(model, first), features, rows)
            try:
                reply = await self.serving.ModelInfer(request, timeout=10)
                version = reply.model_version
                predicted = [b.decode() for b in reply.outputs[0].contents.bytes_contents]
            except grpc.aio.AioRpcError:
                served.failed_requests += 1
                version, predicted = "", [""] * len(rows)
            served.add(version, predicted, time.time())
            due = first + len(rows) - self.label_delay
            if due - released >= LABEL_CHUNK:
                await self._label(stream, released, due)
                released = due
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))  # pacing to the target rate
            if loop.time() - next_at > 1.0:
                next_at = loop.time()  # behind by more than a second: do not burst to catch up

    async def _label(self, stream: Stream, start: int, stop: int) -> None:
        """Labels of rows [start, stop) to the monitor, and the rows themselves to training."""
        model = self.models[stream.name]
        total = len(stream.live)
        answered = [r for r in range(start, stop) if self.served[stream.name].versions[r]]
        labels = stream.live[TARGET].to_numpy()
        request = ingestion_pb2.IngestLabelsRequest(
            model=model,
            request_ids=[row_request_id(model, r, total) for r in answered],
            labels=[str(labels[r]) for r in answered],
        )
        sent = await asyncio.gather(
            self.ingest.IngestLabels(request, metadata=self.meta),
            ingest_frame(self.ingest, model, stream.live.iloc[start:stop], self.meta),
            return_exceptions=True,
        )
        for outcome in sent:
            if isinstance(outcome, grpc.aio.AioRpcError):
                self.served[stream.name].failed_label_calls += 1
            elif isinstance(outcome, BaseException):
                raise outcome

    @staticmethod
    def _request(
        model: str, request_id: str, features: list[str], rows: np.ndarray
    ) -> v2.ModelInferRequest:
        request = v2.ModelInferRequest(model_name=model, id=request_id)
        for i, name in enumerate(features):
            tensor = request.inputs.add(name=name, datatype="FP64", shape=[len(rows)])
            tensor.contents.fp64_contents.extend(rows[:, i].tolist())
        request.outputs.add(name="label")
        return request

    async def records(self) -> dict[str, Records]:
        """Per stream, what the platform recorded about its model."""
        found = {}
        for stream in self.streams:
            model = self.models[stream.name]
            listed = await self.training.ListRuns(
                training_pb2.ListRunsRequest(model=model, limit=1000)
            )
            runs = [
                Run(
                    seconds_or_none(r.created_at) or 0.0,
                    r.trigger,
                    r.registered_version,
                    r.promoted,
                    r.decision_reason,
                )
                for r in listed.runs
            ]
            history = await self.registry.get_history(model)
            versions = {v.version: v for v in await self.registry.list_versions(model)}
            report = await self.monitoring.GetDriftReport(
                monitoring_pb2.GetDriftReportRequest(model=model), timeout=15
            )
            found[stream.name] = Records(
                detections=sorted(
                    seconds_or_none(e.occurred_at) or 0.0
                    for e in self.events
                    if e.type == "DriftDetected" and e.drift_detected.model == model
                ),
                runs=sorted(runs, key=lambda r: r.created_at),
                moves=[a for a in history.aliases if a.alias == "production"],
                versions=versions,
                labels_joined=report.performance.labelled_rows,
                labels_unmatched=report.performance.unmatched_labels,
            )
        return found


def load_versions(common: CommonSettings, records: Records) -> dict[str, Any]:
    """Every registered version's pipeline, from the object store (hash-checked skops)."""
    from driftloop.shared.artifacts import load_model
    from driftloop.shared.s3 import open_object_store

    store = open_object_store(common)
    return {
        version: load_model(store.get(found.artifact_uri), found.artifact_sha256)
        for version, found in records.versions.items()
        if found.artifact_uri
    }


def predictions(pipeline: Any, frame: pd.DataFrame) -> np.ndarray:
    features = [str(c) for c in pipeline.feature_names_in_]
    return np.asarray(pipeline.predict(frame[features])).astype(str)
