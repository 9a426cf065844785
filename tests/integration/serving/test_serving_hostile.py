"""Hostile V2 callers (#21): a request of millions of tiny input tensors, or one larger than the
service takes, is refused with a clear status, while other clients' small requests keep being
answered and the serving process's memory stays bounded."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from serving_models import make_pipeline
from support import start_process, stop_process, wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from driftloop.shared import artifacts
from driftloop.shared.bus import topics
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.chaos.hostile import many_tiny_tensors
from driftloop.shared.cli.chaos.infra import rss_mb
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration
V1 = artifacts.dump_model(make_pipeline())
MB = 1024 * 1024


def small_request(i: int) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="proc", id=f"ok-{i}")
    req.inputs.add(name="x1", datatype="FP64", shape=[1]).contents.fp64_contents.append(0.5)
    req.inputs.add(name="color", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"r")
    req.inputs.add(name="x2", datatype="FP64", shape=[1]).contents.fp64_contents.append(0.1)
    return req


async def serving_process(common: CommonSettings, tmp_path: Path) -> Any:
    await ensure_topics(common.bootstrap())
    open_object_store(common).put("artifacts/proc/r1/model.skops", V1)
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_PORTS__SERVING": str(common.ports.serving),
        "DRIFTLOOP_PORTS__METRICS_SERVING": str(common.ports.metrics_serving),
        "DRIFTLOOP_PORTS__REGISTRY": str(common.ports.registry),
        "DRIFTLOOP_LOG_JSON": "true",
    }
    return start_process(
        [sys.executable, "-m", "driftloop.services.serving"],
        env=env,
        log_path=str(tmp_path / "serving.log"),
    )


async def test_many_input_and_oversized_requests_are_refused_under_load(
    common: CommonSettings, tmp_path: Path
) -> None:
    proc = await serving_process(common, tmp_path)
    registry = EventPublisher(common.bootstrap(), "registry")
    await registry.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{common.ports.serving}", options=[("grpc.max_send_message_length", -1)]
    )
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    raw_infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda b: b,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    answered: list[int] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def deployed() -> bool:
        try:
            await stub.ModelInfer(small_request(0), timeout=2)
            return True
        except grpc.aio.AioRpcError:
            promoted = events_pb2.ModelPromoted(
                model="proc",
                version="1",
                artifact_uri="artifacts/proc/r1/model.skops",
                artifact_sha256=artifacts.sha256(V1),
                action="promote",
            )
            await registry.publish(topics.MODELS, "proc", registry.event(promoted))
            return False

    async def background() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                await stub.ModelInfer(small_request(i), timeout=10)
                answered.append(i)
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")

    try:
        await wait_for(deployed, 90, "serving answering model proc")
        before = rss_mb(proc.pid)
        load = asyncio.create_task(background())
        await wait_for(lambda: len(answered) > 20, 30, "background requests answered")

        with pytest.raises(grpc.aio.AioRpcError) as oversized:
            await raw_infer(many_tiny_tensors("proc", 60 * MB), timeout=60)
        assert oversized.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as many:
                await raw_infer(many_tiny_tensors("proc", 15 * MB), timeout=60)
            assert many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # counted on the wire, before any parse: more than any model's feature count
            assert "input tensors; it takes at most 1024" in (many.value.details() or "")

        seen = len(answered)
        await wait_for(lambda: len(answered) > seen + 20, 30, "requests answered afterwards")
        stop.set()
        await load
        assert not failures, failures[:5]
        # a refused request's parse is given back to the OS once the call has ended
        await wait_for(
            lambda: rss_mb(proc.pid) - before < 200, 30, "serving RSS back within 200 MB"
        )
    finally:
        stop.set()
        stop_process(proc)
        await channel.close()
        await registry.stop()
    assert proc.returncode == 0, (tmp_path / "serving.log").read_text()[-2000:]
