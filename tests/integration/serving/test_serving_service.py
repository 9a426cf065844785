"""Serving against the real broker and a local object store holding real artifacts: promotions
deploy over Kafka, the V2 API answers, predictions are logged, failures keep the old version."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from aiokafka import TopicPartition
from serving_models import make_pipeline
from support import start_process, stop_process, wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from driftloop.protos.registry.v1 import registry_pb2, registry_pb2_grpc
from driftloop.services.serving.adapters.grpc import InferenceServicer, binding
from driftloop.services.serving.adapters.kafka import (
    ModelEvents,
    model_events_consumer,
    prediction_log_publisher,
)
from driftloop.services.serving.adapters.registry import RegistryVersions
from driftloop.services.serving.core.deployment import Deployer
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.prediction_log import PredictionLogger
from driftloop.services.serving.core.reconcile import Reconciler
from driftloop.services.serving.core.slot import ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.records import ipc_to_table
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

V1 = artifacts.dump_model(make_pipeline())
V2 = artifacts.dump_model(make_pipeline(seed=1))


@dataclass
class Stack:
    stub: pb_grpc.GRPCInferenceServiceStub
    registry: EventPublisher
    store: ObjectStore
    deployer: Deployer
    events: ModelEvents
    seen: list[envelope.Envelope] = field(default_factory=list)

    def of(self, kind: str, **where: Any) -> list[Any]:
        found = []
        for event in self.seen:
            if event.type == kind:
                payload = envelope.payload(event)
                if all(getattr(payload, k) == v for k, v in where.items()):
                    found.append(event)
        return found


@contextlib.asynccontextmanager
async def serving(common: CommonSettings) -> AsyncIterator[Stack]:
    """The serving parts main.py wires, minus the reconcile loop (no registry runs here)."""
    await ensure_topics(common.bootstrap())
    store = open_object_store(common)

    async def fetch(key: str) -> bytes:
        return await asyncio.to_thread(store.get, key)

    async def load(data: bytes, sha: str) -> Any:
        return await asyncio.to_thread(artifacts.load_model, data, sha)

    publisher = EventPublisher(common.bootstrap(), "serving")
    registry = EventPublisher(common.bootstrap(), "registry")
    await publisher.start()
    await registry.start()
    deployer = Deployer(ModelSlot(), fetch, load)
    logger = PredictionLogger(prediction_log_publisher(publisher), flush_interval_s=0.1)
    events = ModelEvents(deployer, publisher, "test-host:1")
    servicer = InferenceServicer(InferenceService(deployer.slot, logger), lambda: True)
    server, _, port = build_server(common, 0, [binding(servicer)])
    await server.start()
    consumer = model_events_consumer(common, publisher, events)
    seen: list[envelope.Envelope] = []

    async def collect(event: envelope.Envelope) -> None:
        seen.append(event)

    listener = EventConsumer(
        bootstrap=common.bootstrap(),
        group=None,
        topic_names=[topics.DEPLOYMENTS, topics.PREDICTIONS],
        publisher=publisher,
        on_event=collect,
    )
    tasks = [asyncio.create_task(t) for t in (consumer.run(), listener.run(), logger.run())]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        await asyncio.wait_for(asyncio.gather(consumer.ready.wait(), listener.ready.wait()), 30)
        # why the private consumer: from_latest resolves the offset lazily; a promotion published
        # before that would be skipped, so wait until the position is known.
        await asyncio.wait_for(consumer._consumer.position(TopicPartition(topics.MODELS, 0)), 30)
        stack = Stack(
            pb_grpc.GRPCInferenceServiceStub(channel), registry, store, deployer, events, seen
        )
        yield stack
    finally:
        await channel.close()
        await consumer.stop()
        await listener.stop()
        tasks[2].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop(grace=1)
        await registry.stop()
        await publisher.stop()


def promoted(stack: Stack, model: str, version: str, key: str, sha: str) -> envelope.Envelope:
    return stack.registry.event(
        events_pb2.ModelPromoted(
            model=model,
            version=version,
            artifact_uri=key,
            artifact_sha256=sha,
            action="promote",
            reason="test",
        ),
        correlation_id=f"corr-{model}-{version}",
    )


def infer_request(model: str, rows: list[tuple[float, str, float]], rid: str) -> Any:
    req = pb.ModelInferRequest(model_name=model, id=rid)
    for name, datatype, column in (
        ("x1", "FP64", [r[0] for r in rows]),
        ("color", "BYTES", [r[1].encode() for r in rows]),
        ("x2", "FP64", [r[2] for r in rows]),
    ):
        tensor = req.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
        target = (
            tensor.contents.bytes_contents if datatype == "BYTES" else tensor.contents.fp64_contents
        )
        target.extend(column)
    return req


async def test_promotion_deploys_answers_logs_and_a_bad_hash_keeps_v1(
    common: CommonSettings,
) -> None:
    async with serving(common) as stack:
        stack.store.put("artifacts/churn/r1/model.skops", V1)
        stack.store.put("artifacts/churn/r2/model.skops", V2)
        first = promoted(
            stack, "churn", "1", "artifacts/churn/r1/model.skops", artifacts.sha256(V1)
        )
        await stack.registry.publish(topics.MODELS, "churn", first)
        [deployed] = await wait_for(
            lambda: stack.of("ModelDeployed", model="churn"), 30, "ModelDeployed for churn v1"
        )
        assert deployed.causation_id == first.event_id
        assert deployed.correlation_id == "corr-churn-1"
        assert deployed.model_deployed.version == "1"
        assert deployed.model_deployed.instance == "test-host:1"

        rows = [(1.5, "red", -0.5), (-2.0, "blue", 0.25)]
        reply = await stack.stub.ModelInfer(infer_request("churn", rows, "req-42"))
        assert (reply.model_version, reply.id) == ("1", "req-42")
        labels = list(reply.outputs[0].contents.bytes_contents)
        assert len(labels) == 2 and set(labels) <= {b"yes", b"no"}

        [log] = await wait_for(
            lambda: stack.of("PredictionLog", model="churn"), 30, "PredictionLog for churn"
        )
        assert (log.prediction_log.version, log.prediction_log.row_count) == ("1", 2)
        table = ipc_to_table(log.prediction_log.arrow_ipc).to_pydict()
        assert table["x1"] == [1.5, -2.0] and table["color"] == ["red", "blue"]
        assert table["x2"] == [-0.5, 0.25]
        assert table["_request_id"] == ["req-42:0", "req-42:1"]
        assert table["_prediction"] == [label.decode() for label in labels]

        bad = promoted(stack, "churn", "2", "artifacts/churn/r2/model.skops", "0" * 64)
        await stack.registry.publish(topics.MODELS, "churn", bad)
        [failed] = await wait_for(
            lambda: stack.of("DeploymentFailed", model="churn"), 30, "DeploymentFailed for churn v2"
        )
        assert failed.causation_id == bad.event_id
        assert failed.deployment_failed.version == "2"
        assert "hash mismatch" in failed.deployment_failed.error
        reply = await stack.stub.ModelInfer(infer_request("churn", rows[:1], "req-43"))
        assert reply.model_version == "1"
        ready = await stack.stub.ModelReady(pb.ModelReadyRequest(name="churn", version="2"))
        assert not ready.ready


async def test_v2_api_metadata_and_error_statuses(common: CommonSettings) -> None:
    async with serving(common) as stack:
        stack.store.put("artifacts/fraud/r1/model.skops", V1)
        await stack.deployer.deploy(
            "fraud", "1", "artifacts/fraud/r1/model.skops", artifacts.sha256(V1)
        )
        assert (await stack.stub.ServerLive(pb.ServerLiveRequest())).live
        assert (await stack.stub.ServerReady(pb.ServerReadyRequest())).ready
        assert (await stack.stub.ModelReady(pb.ModelReadyRequest(name="fraud"))).ready
        meta = await stack.stub.ServerMetadata(pb.ServerMetadataRequest())
        assert meta.name == "driftloop" and meta.version
        model = await stack.stub.ModelMetadata(pb.ModelMetadataRequest(name="fraud"))
        assert (list(model.versions), model.platform) == (["1"], "sklearn")
        assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
            ("x1", "FP64", [-1]),
            ("color", "BYTES", [-1]),
            ("x2", "FP64", [-1]),
        ]
        assert [(t.name, list(t.shape)) for t in model.outputs] == [
            ("label", [-1]),
            ("probabilities", [-1, 2]),
        ]

        req = infer_request("fraud", [(1.0, "red", 2.0)], "r")
        req.inputs[0].name = "x9"
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stack.stub.ModelInfer(req)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown input 'x9'" in (bad.value.details() or "")

        req = infer_request("fraud", [(1.0, "red", 2.0)], "r")
        req.raw_input_contents.append(np.array([1.0], "<f8").tobytes())
        with pytest.raises(grpc.aio.AioRpcError) as mixed:
            await stack.stub.ModelInfer(req)
        assert mixed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents has 1 entries" in (mixed.value.details() or "")

        for call in (
            stack.stub.ModelInfer(infer_request("nope", [(1.0, "red", 2.0)], "r")),
            stack.stub.ModelMetadata(pb.ModelMetadataRequest(name="nope")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await call
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            assert "model 'nope' is not served" in (missing.value.details() or "")


class RegistryStandIn(registry_pb2_grpc.RegistryServiceServicer):
    """A registry with one model whose production version is "1" (serves only reads)."""

    def __init__(self, sha: str) -> None:
        self.sha = sha

    async def ListModels(self, request: Any, context: Any) -> Any:  # noqa: N802
        return registry_pb2.ListModelsResponse(
            models=[
                registry_pb2.Model(name="ads", production_version="1"),
                registry_pb2.Model(name="draft", production_version=""),
            ]
        )

    async def GetVersion(self, request: Any, context: Any) -> Any:  # noqa: N802
        return registry_pb2.ModelVersion(
            model=request.model,
            version=request.version,
            status="production",
            artifact_uri="artifacts/ads/r1/model.skops",
            artifact_sha256=self.sha,
            lineage=registry_pb2.Lineage(correlation_id="corr-lineage"),
        )


async def test_reconcile_deploys_the_registry_production_version(
    common: CommonSettings,
) -> None:
    async with serving(common) as stack, RegistryClient(common, timeout=3) as client:
        reader = RegistryVersions(client)
        reconciler = Reconciler(stack.deployer, stack.events, reader, interval_s=5)
        await reconciler.reconcile_once()  # nothing listens on the registry port yet
        assert reconciler.first_done.is_set() and stack.deployer.slot.models() == []

        stack.store.put("artifacts/ads/r1/model.skops", V1)
        registry, _, port = build_server(
            common,
            common.ports.registry,
            [
                ServiceBinding(
                    add=registry_pb2_grpc.add_RegistryServiceServicer_to_server,
                    servicer=RegistryStandIn(artifacts.sha256(V1)),
                    full_name="driftloop.registry.v1.RegistryService",
                )
            ],
        )
        await registry.start()
        try:
            await reconciler.reconcile_once()
            assert stack.deployer.slot.production_version("ads") == "1"
            [deployed] = await wait_for(
                lambda: stack.of("ModelDeployed", model="ads"), 30, "ModelDeployed for ads"
            )
            assert deployed.correlation_id == "corr-lineage" and not deployed.causation_id
            await reconciler.reconcile_once()  # already served: nothing more
            reply = await stack.stub.ModelInfer(infer_request("ads", [(0.0, "red", 0.0)], ""))
            assert reply.model_version == "1"
        finally:
            await registry.stop(grace=1)
        assert len(stack.of("ModelDeployed", model="ads")) == 1


async def test_the_service_process_starts_deploys_a_promotion_and_stops(
    common: CommonSettings,
    tmp_path: Any,
) -> None:
    """`python -m driftloop.services.serving` as the supervisor runs it (main.py's wiring)."""
    await ensure_topics(common.bootstrap())
    open_object_store(common).put("artifacts/proc/r1/model.skops", V1)
    ports = common.ports
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_PORTS__SERVING": str(ports.serving),
        "DRIFTLOOP_PORTS__METRICS_SERVING": str(ports.metrics_serving),
        "DRIFTLOOP_PORTS__REGISTRY": str(ports.registry),
        "DRIFTLOOP_LOG_JSON": "true",
    }
    proc = start_process(
        [sys.executable, "-m", "driftloop.services.serving"],
        env=env,
        log_path=str(tmp_path / "serving.log"),
    )
    registry = EventPublisher(common.bootstrap(), "registry")
    await registry.start()
    seen: list[envelope.Envelope] = []

    async def collect(event: envelope.Envelope) -> None:
        seen.append(event)

    listener = EventConsumer(
        bootstrap=common.bootstrap(),
        group=None,
        topic_names=[topics.DEPLOYMENTS],
        publisher=registry,
        on_event=collect,
    )
    task = asyncio.create_task(listener.run())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports.serving}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    published = [0.0]

    async def deployed() -> bool:
        # The process reads driftloop.models from its latest offset, resolved lazily after it
        # reports ready; so re-promote (idempotent: already production -> reported again)
        # every 2 s until a ModelDeployed shows up.
        if any(e.type == "ModelDeployed" and e.model_deployed.model == "proc" for e in seen):
            return True
        if time.monotonic() - published[0] > 2:
            published[0] = time.monotonic()
            event = registry.event(
                events_pb2.ModelPromoted(
                    model="proc",
                    version="1",
                    artifact_uri="artifacts/proc/r1/model.skops",
                    artifact_sha256=artifacts.sha256(V1),
                    action="promote",
                )
            )
            await registry.publish(topics.MODELS, "proc", event)
        return False

    try:
        await wait_for(lambda: _ready(stub), 60, "serving process ready")
        await wait_for(deployed, 30, "ModelDeployed from the serving process")
        reply = await stub.ModelInfer(infer_request("proc", [(0.5, "red", 0.5)], "p-1"))
        assert reply.model_version == "1"
    finally:
        stop_process(proc)
        await channel.close()
        await listener.stop()
        await task
        await registry.stop()
    assert proc.returncode == 0, (tmp_path / "serving.log").read_text()[-2000:]


async def _ready(stub: pb_grpc.GRPCInferenceServiceStub) -> bool:
    return (await stub.ServerReady(pb.ServerReadyRequest(), timeout=2)).ready
