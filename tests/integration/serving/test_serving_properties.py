"""Property tests against a running V2 server (real gRPC, micro-batching on): random and
malformed requests never crash it, never get a wrong-length answer, and valid requests keep
working; oversized requests get RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_models import make_pipeline

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from driftloop.services.serving.adapters.grpc import InferenceServicer, binding
from driftloop.services.serving.core.batching import BatchPolicy
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.cli.bench.serving_stack import FEATURES, MODEL, train_bench_model
from driftloop.shared.grpc.server import MAX_MESSAGE_BYTES, build_server
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

MAX_ROWS = 500
ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
FIELDS = ["fp32_contents", "fp64_contents", "int_contents", "int64_contents", "bytes_contents"]


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """The V2 servicer with batching, on a free port, its event loop in a background thread."""
    pipeline = make_pipeline()
    slot = ModelSlot()
    slot.swap(LoadedModel("m", "1", pipeline, artifacts.signature(pipeline), "sha"))
    numeric, _ = train_bench_model()
    slot.swap(LoadedModel(MODEL, "1", numeric, artifacts.signature(numeric), "sha"))
    service = InferenceService(
        slot, batching=BatchPolicy(max_batch_size=64), max_request_rows=MAX_ROWS
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: dict[str, Any] = {}

    async def serve() -> None:
        server, _, port = build_server(
            CommonSettings(), 0, [binding(InferenceServicer(service, lambda: True))]
        )
        await server.start()
        stop["event"], stop["port"] = asyncio.Event(), port
        started.set()
        await stop["event"].wait()
        await server.stop(grace=1)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30), "server did not start"
    try:
        yield f"127.0.0.1:{stop['port']}"
    finally:
        loop.call_soon_threadsafe(stop["event"].set)
        thread.join(30)
        loop.close()


@pytest.fixture(scope="module")
def stub(address: str) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    options = [("grpc.max_send_message_length", 2 * MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(address, options=options) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def valid_request(rows: int = 2) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m", id="ok")
    for name, datatype in (("x1", "FP64"), ("color", "BYTES"), ("x2", "FP64")):
        t = req.inputs.add(name=name, datatype=datatype, shape=[rows])
        if datatype == "BYTES":
            t.contents.bytes_contents.extend([b"red"] * rows)
        else:
            t.contents.fp64_contents.extend([0.5] * rows)
    return req


def rows_answered(reply: pb.ModelInferResponse) -> set[int]:
    return {int(o.shape[0]) for o in reply.outputs}


@st.composite
def requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["m", "m", "m", "other", ""])),
        model_version=draw(st.sampled_from(["", "", "1", "7"])),
        id=draw(st.text(max_size=5)),
    )
    for _ in range(draw(st.integers(0, 4))):
        t = req.inputs.add(
            name=draw(st.sampled_from(["x1", "color", "x2", "input-0", "zz"])),
            datatype=draw(st.sampled_from(["FP64", "FP32", "INT32", "INT64", "BYTES", "BOOL"])),
            shape=draw(st.lists(st.integers(-1, 6), max_size=3)),
        )
        field = draw(st.sampled_from(FIELDS))
        count = draw(st.integers(0, 12))
        if field == "bytes_contents":
            values: Any = draw(st.lists(st.binary(max_size=4), min_size=count, max_size=count))
        elif field.startswith("fp"):
            values = draw(st.lists(st.floats(width=32), min_size=count, max_size=count))
        else:
            values = draw(st.lists(st.integers(-1000, 1000), min_size=count, max_size=count))
        getattr(t.contents, field).extend(values)
    if draw(st.booleans()) and req.inputs:
        for t in req.inputs:
            t.ClearField("contents")
        for _ in range(draw(st.integers(0, len(req.inputs) + 1))):
            req.raw_input_contents.append(draw(st.binary(max_size=64)))
    for name in draw(st.lists(st.sampled_from(["label", "probabilities", "nope"]), max_size=2)):
        req.outputs.add(name=name)
    return req


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests())
def test_random_requests_never_crash_and_never_get_a_wrong_length(
    stub: pb_grpc.GRPCInferenceServiceStub, req: pb.ModelInferRequest
) -> None:
    try:
        reply = stub.ModelInfer(req, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details())
        assert exc.details()
    else:
        claimed = {int(t.shape[0]) for t in req.inputs if t.shape}
        assert len(claimed) == 1 and rows_answered(reply) == claimed
    good = stub.ModelInfer(valid_request(), timeout=10)
    assert rows_answered(good) == {2}


def test_concurrent_valid_requests_answer_their_own_rows(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    futures = [stub.ModelInfer.future(valid_request(n % 5 + 1), timeout=10) for n in range(40)]
    for n, future in enumerate(futures):
        assert rows_answered(future.result()) == {n % 5 + 1}


def test_oversized_requests_get_resource_exhausted(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as too_many:
        stub.ModelInfer(valid_request(MAX_ROWS + 1), timeout=10)
    assert too_many.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"at most {MAX_ROWS} rows" in (too_many.value.details() or "")

    huge = pb.ModelInferRequest(model_name="m")
    huge.raw_input_contents.append(np.zeros(MAX_MESSAGE_BYTES // 8 + 16).tobytes())
    with pytest.raises(grpc.RpcError) as too_big:
        stub.ModelInfer(huge, timeout=30)
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rows_answered(stub.ModelInfer(valid_request(), timeout=10)) == {2}


def test_the_bench_load_client_counts_answers_and_failures(address: str) -> None:
    """The load client of `driftloop bench serving`, in-process, for a fraction of a second."""
    from driftloop.shared.cli.bench.serving_load import LoadSpec, run

    def load(**kw: Any) -> dict[str, Any]:
        spec = LoadSpec(target=address, features=len(FEATURES), seconds=0.3, warmup_s=0.0, **kw)
        return asyncio.run(run(spec))

    good = load(model=MODEL, rows=1, concurrency=4)
    assert good["requests"] > 0 and good["failed"] == 0
    assert good["p50_ms"] <= good["p99_ms"] and good["rows_per_s"] == good["rps"]
    with pytest.raises(grpc.aio.AioRpcError):  # the first call checks the target answers
        load(model="nope", rows=1, concurrency=1)
