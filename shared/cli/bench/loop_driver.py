"""The loop benchmark's driver: steady single-row prediction traffic against a running stack,
labels fed back through ingestion, drift episodes injected one after another, events tailed."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pandas as pd
from google.protobuf import struct_pb2

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.shared.bus import connection, envelope, topics
from driftloop.shared.cli.commands.demo_data import FEATURES, TARGET, make_rows
from driftloop.shared.cli.partitions import every_partition
from driftloop.shared.grpc.client import aio_channel, auth_metadata
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.settings import CommonSettings

BLOCK = 4000
"""Rows generated at once per regime (cheaper than one DataFrame per request)."""


@dataclass
class Episode:
    index: int
    shift: float
    t0: float
    """Wall time the first drifted row was sent."""
    old_version: str
    new_version: str = ""
    serving_at: float | None = None
    """Wall time of the first reply from the new version."""


@dataclass
class Traffic:
    sent: int = 0
    failed: int = 0
    started: float = 0.0
    stopped: float = 0.0
    version: str = ""
    first_seen: dict[str, float] = field(default_factory=dict)

    def rate(self) -> float:
        return self.sent / max(1e-9, (self.stopped or time.time()) - self.started)


class LoopDriver:
    def __init__(self, common: CommonSettings, rate: int, workers: int, seed: int = 7) -> None:
        self.common = common
        self.rate = rate
        self.workers = workers
        self.rng = np.random.default_rng(seed)
        self.name = f"loop-{secrets.token_hex(2)}"
        self.shift = 0.0
        self.traffic = Traffic()
        self.events: list[envelope.Envelope] = []
        self._rows: list[dict[str, Any]] = []
        self._block: list[dict[str, Any]] = []
        self._block_shift: float | None = None
        self._labels: list[dict[str, Any]] = []
        self._stop = asyncio.Event()
        self.meta = auth_metadata(common)

    async def __aenter__(self) -> LoopDriver:
        self._channels = {
            s: aio_channel(self.common, s) for s in ("ingestion", "training", "serving")
        }
        self.ingest = ingestion_pb2_grpc.IngestionServiceStub(self._channels["ingestion"])
        self.registry = RegistryClient(self.common)
        self.serving = v2_grpc.GRPCInferenceServiceStub(self._channels["serving"])
        self._tail = asyncio.create_task(tail_events(self.common, self.events))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_traffic()
        self._tail.cancel()
        await asyncio.gather(self._tail, return_exceptions=True)
        for ch in self._channels.values():
            await ch.close()
        await self.registry.close()

    async def first_version(self, rows: int, timeout: float = 180) -> str:
        """Declare the model, ingest labelled rows, wait for v1 to be promoted and served."""
        await self.registry.create_model(self.name, self.name, TARGET)
        for _ in range(rows // 500):
            await self._ingest_frame(make_rows(500, rng=self.rng, shift=0.0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            version = await self._answering_version()
            if version:
                return version
            await asyncio.sleep(0.3)  # poll: waiting for the first deployment
        raise TimeoutError(f"no version of {self.name} served within {timeout:.0f}s")

    async def _answering_version(self) -> str:
        try:
            reply = await self.serving.ModelInfer(self._request(self._next_row()), timeout=5)
        except grpc.aio.AioRpcError:
            return ""
        return reply.model_version

    def start_traffic(self) -> list[asyncio.Task[None]]:
        self.traffic.started = time.time()
        self._tasks = [asyncio.create_task(self._send(w)) for w in range(self.workers)]
        self._tasks.append(asyncio.create_task(self._feed_labels()))
        return self._tasks

    async def stop_traffic(self) -> None:
        if self._stop.is_set() or not getattr(self, "_tasks", None):
            return
        self._stop.set()
        self.traffic.stopped = time.time()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def episode(self, index: int, shift: float, timeout: float) -> Episode:
        """Shift the data and wait until serving answers with a version trained after it."""
        old = self.traffic.version
        self.shift = shift
        ep = Episode(index, shift, time.time(), old)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fresh = [v for v, at in self.traffic.first_seen.items() if at >= ep.t0 and v != old]
            if fresh:
                ep.new_version = fresh[0]
                ep.serving_at = self.traffic.first_seen[fresh[0]]
                return ep
            await asyncio.sleep(0.05)  # poll: the traffic tasks record what answers
        return ep

    async def settle(self, seconds: float) -> None:
        """Keep the traffic flowing on the current regime (the monitor's window refills)."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass  # the settle time passed with traffic running

    def _next_row(self) -> dict[str, Any]:
        if not self._block or self._block_shift != self.shift:
            frame = make_rows(BLOCK, rng=self.rng, shift=self.shift)
            self._block, self._block_shift = frame.to_dict(orient="records"), self.shift
        return self._block.pop()

    def _request(self, row: dict[str, Any]) -> v2.ModelInferRequest:
        request = v2.ModelInferRequest(model_name=self.name)
        for name in FEATURES:
            tensor = request.inputs.add(name=name, shape=[1])
            if name == "segment":
                tensor.datatype = "BYTES"
                tensor.contents.bytes_contents.append(row[name].encode())
            else:
                tensor.datatype = "FP64"
                tensor.contents.fp64_contents.append(row[name])
        return request

    async def _send(self, worker: int) -> None:
        loop = asyncio.get_running_loop()
        interval = self.workers / self.rate
        next_at = loop.time() + interval * worker / self.workers
        while not self._stop.is_set():
            row = self._next_row()
            try:
                reply = await self.serving.ModelInfer(self._request(row), timeout=10)
            except grpc.aio.AioRpcError:
                self.traffic.failed += 1
                continue
            now = time.time()
            self.traffic.sent += 1
            self.traffic.version = reply.model_version
            self.traffic.first_seen.setdefault(reply.model_version, now)
            self._labels.append(row)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))  # pacing to the target rate
            if loop.time() - next_at > 1.0:
                next_at = loop.time()  # behind by more than a second: do not burst to catch up

    async def _feed_labels(self) -> None:
        """Every answered row goes back with its label, as ground truth arriving would."""
        while not self._stop.is_set():
            await self.settle(0.5)
            rows, self._labels = self._labels, []
            if rows:
                await self._ingest_frame(pd.DataFrame(rows))

    async def _ingest_frame(self, frame: pd.DataFrame) -> None:
        await ingest_frame(self.ingest, self.name, frame, self.meta)


async def ingest_frame(
    stub: ingestion_pb2_grpc.IngestionServiceStub,
    dataset: str,
    frame: pd.DataFrame,
    meta: Any,
) -> None:
    """One Ingest call holding `frame`'s rows."""
    structs = []
    for record in frame.to_dict(orient="records"):
        s = struct_pb2.Struct()
        s.update(record)
        structs.append(s)
    await stub.Ingest(ingestion_pb2.IngestRequest(dataset=dataset, rows=structs), metadata=meta)


async def tail_events(
    common: CommonSettings,
    sink: list[envelope.Envelope],
    names: tuple[str, ...] = (topics.DRIFT, topics.MODELS, topics.DEPLOYMENTS),
) -> None:
    """Append every event published on `names` from now on to `sink`, until cancelled."""
    kafka = common.kafka_connection()
    consumer = connection.consumer(kafka)
    await connection.start(consumer, kafka)
    try:
        consumer.assign(await every_partition(kafka, names))
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    try:
                        sink.append(envelope.decode(r.value))
                    except Exception:  # noqa: BLE001 - the bench reads what it can
                        continue
    finally:
        await consumer.stop()
