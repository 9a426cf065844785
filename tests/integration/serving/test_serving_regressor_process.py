"""The serving process (`python -m driftloop.services.serving`, main.py's wiring, compiled form
on) answering regressors over real gRPC and Kafka: artifacts in the object store, promotions on
driftloop.models; a classifier swapped for a regressor of the same name; `prediction` FP64 [N]
in both request styles and float widths; the prediction log's float64 `_prediction`; a V2 JSON
request on driftloop.inference.requests answered with numbers."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
from aiokafka import ConsumerRecord
from serving_models import FEATURES, NUMERIC, make_pipeline, make_regressor
from support import start_process, stop_process, wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from driftloop.shared import artifacts
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.records import ipc_to_table
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

CLASSIFIER = make_pipeline()
REGRESSOR = make_regressor()
NUMERIC_REGRESSOR = make_regressor(estimator="ridge", features=NUMERIC)
ARTIFACTS = {
    ("price", "1"): CLASSIFIER,
    ("price", "2"): REGRESSOR,
    ("load", "1"): NUMERIC_REGRESSOR,
}
ROWS = [(1.5, "red", -0.5), (-2.0, "blue", 0.25), (0.0, "green", 3.0)]
COMPILED_TOLERANCE = 1e-4
"""serving's compiled-form tolerance for regressors (relative; compiled_form.py)."""


def key(model: str, version: str) -> str:
    return f"artifacts/{model}/r{version}/model.skops"


def mixed_request(*, raw: bool = False, version: str = "", wanted: str = "") -> Any:
    req = pb.ModelInferRequest(model_name="price", model_version=version, id="px-1")
    for name, datatype, values in (
        ("x1", "FP64", [r[0] for r in ROWS]),
        ("color", "BYTES", [r[1].encode() for r in ROWS]),
        ("x2", "FP64", [r[2] for r in ROWS]),
    ):
        tensor = req.inputs.add(name=name, datatype=datatype, shape=[len(ROWS)])
        if raw:
            req.raw_input_contents.append(
                b"".join(len(v).to_bytes(4, "little") + v for v in values)
                if datatype == "BYTES"
                else np.asarray(values, dtype="<f8").tobytes()
            )
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(values)
        else:
            tensor.contents.fp64_contents.extend(values)
    if wanted:
        req.outputs.add(name=wanted)
    return req


def relative(want: np.ndarray, got: np.ndarray) -> float:
    return float(np.max(np.abs(got - want) / (np.abs(want) + np.mean(np.abs(want)))))


async def test_the_process_serves_regressors_and_swaps_a_classifier_for_one(
    common: CommonSettings, tmp_path: Path
) -> None:
    await ensure_topics(common.bootstrap())
    store = open_object_store(common)
    blobs = {where: artifacts.dump_model(p) for where, p in ARTIFACTS.items()}
    for (model, version), blob in blobs.items():
        store.put(key(model, version), blob)
    ports = common.ports
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_PORTS__SERVING": str(ports.serving),
        "DRIFTLOOP_PORTS__METRICS_SERVING": str(ports.metrics_serving),
        "DRIFTLOOP_PORTS__REGISTRY": str(ports.registry),
        "DRIFTLOOP_LOG_JSON": "true",
    }
    log = tmp_path / "serving.log"
    proc = start_process(
        [sys.executable, "-m", "driftloop.services.serving"], env=env, log_path=str(log)
    )
    client = EventPublisher(common.bootstrap(), "registry")
    await client.start()
    events: list[envelope.Envelope] = []
    responses: list[ConsumerRecord] = []

    async def on_event(event: envelope.Envelope) -> None:
        events.append(event)

    async def on_response(record: ConsumerRecord) -> None:
        responses.append(record)

    listeners = [
        EventConsumer(
            bootstrap=common.bootstrap(),
            group=None,
            topic_names=[topics.DEPLOYMENTS, topics.PREDICTIONS],
            publisher=client,
            on_event=on_event,
        ),
        EventConsumer(
            bootstrap=common.bootstrap(),
            group=None,
            topic_names=[topics.INFERENCE_RESPONSES],
            publisher=client,
            on_record=on_response,
        ),
    ]
    tasks = [asyncio.create_task(listener.run()) for listener in listeners]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports.serving}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)

    async def deploy(model: str, version: str) -> None:
        """Promote until the process reports the deployment: it reads driftloop.models from
        its latest offset, resolved lazily after it is ready (a repeat is idempotent)."""
        published = [0.0]

        async def deployed() -> bool:
            if any(
                e.type == "ModelDeployed"
                and (e.model_deployed.model, e.model_deployed.version) == (model, version)
                for e in events
            ):
                return True
            if time.monotonic() - published[0] > 2:
                published[0] = time.monotonic()
                promotion = events_pb2.ModelPromoted(
                    model=model,
                    version=version,
                    artifact_uri=key(model, version),
                    artifact_sha256=artifacts.sha256(blobs[(model, version)]),
                    action="promote",
                )
                await client.publish(topics.MODELS, model, client.event(promotion))
            return False

        await wait_for(deployed, 60, f"ModelDeployed for {model} v{version}")

    try:
        await asyncio.wait_for(asyncio.gather(*(x.ready.wait() for x in listeners)), 30)
        await wait_for(lambda: _ready(stub), 60, "serving process ready")
        await deploy("price", "1")
        first = await stub.ModelInfer(mixed_request())
        assert [o.name for o in first.outputs] == ["label", "probabilities"]

        await deploy("price", "2")
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="price"))
        assert list(meta.versions) == ["2", "1"]
        assert [(o.name, o.datatype, list(o.shape)) for o in meta.outputs] == [
            ("prediction", "FP64", [-1])
        ]
        want = REGRESSOR.predict(pd.DataFrame(ROWS, columns=FEATURES))
        typed = await stub.ModelInfer(mixed_request())
        [out] = typed.outputs
        assert (typed.model_version, out.name, out.datatype, list(out.shape)) == (
            "2",
            "prediction",
            "FP64",
            [3],
        )
        np.testing.assert_allclose(out.contents.fp64_contents, want, rtol=1e-12)
        raw = await stub.ModelInfer(mixed_request(raw=True))
        np.testing.assert_allclose(
            np.frombuffer(raw.raw_output_contents[0], "<f8"), want, rtol=1e-12
        )
        pinned = await stub.ModelInfer(mixed_request(version="1", wanted="label"))
        assert pinned.model_version == "1" and pinned.outputs[0].datatype == "BYTES"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ModelInfer(mixed_request(wanted="probabilities"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "available are ['prediction']" in (refused.value.details() or "")

        await deploy("load", "1")  # all-numeric: served by its compiled (or numeric) form
        values = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 3.0], [0.0, 0.0]])
        tensor = pb.ModelInferRequest(model_name="load", id="t-1")
        tensor.inputs.add(name="in", datatype="FP32", shape=[4, 2])
        tensor.raw_input_contents.append(values.astype("<f4").tobytes())
        per_feature = pb.ModelInferRequest(model_name="load", id="t-2")
        for j, name in enumerate(NUMERIC):
            column = per_feature.inputs.add(name=name, datatype="INT64", shape=[4])
            column.contents.int64_contents.extend(values[:, j].round().astype(int).tolist())
        for request, rows in ((tensor, values), (per_feature, values.round())):
            answer = await stub.ModelInfer(request)
            got = (
                np.frombuffer(answer.raw_output_contents[0], "<f8")
                if request.raw_input_contents
                else np.asarray(answer.outputs[0].contents.fp64_contents)
            )
            assert list(answer.outputs[0].shape) == [4]
            expected = NUMERIC_REGRESSOR.predict(pd.DataFrame(rows, columns=NUMERIC))
            assert relative(expected, got) <= COMPILED_TOLERANCE

        body = {
            "id": "js-1",
            "model_name": "price",
            "inputs": [
                {"name": "x1", "shape": [3], "datatype": "FP64", "data": [r[0] for r in ROWS]},
                {"name": "color", "shape": [3], "datatype": "BYTES", "data": [r[1] for r in ROWS]},
                {"name": "x2", "shape": [3], "datatype": "FP32", "data": [r[2] for r in ROWS]},
            ],
        }
        await client.publish_raw(topics.INFERENCE_REQUESTS, b"js-1", json.dumps(body).encode())
        [reply] = await wait_for(
            lambda: [r for r in responses if r.key == b"js-1"], 60, "the JSON answer"
        )
        answer = json.loads(reply.value)
        [prediction] = answer["outputs"]
        assert (prediction["name"], prediction["datatype"]) == ("prediction", "FP64")
        np.testing.assert_allclose(prediction["data"], want, rtol=1e-6)  # x2 sent as FP32

        def logged() -> dict[str, Any]:
            found = {}
            for event in events:
                if event.type == "PredictionLog" and event.prediction_log.model == "price":
                    table = ipc_to_table(event.prediction_log.arrow_ipc)
                    for request_id, value in zip(
                        table.column("_request_id").to_pylist(),
                        table.column("_prediction").to_pylist(),
                        strict=True,
                    ):
                        found[f"{event.prediction_log.version}/{request_id}"] = value
                    found[f"type/{event.prediction_log.version}"] = str(
                        table.schema.field("_prediction").type
                    )
            return found if "2/js-1:2" in found else {}

        found = await wait_for(logged, 60, "the regressor's rows in the prediction log")
        assert (found["type/1"], found["type/2"]) == ("string", "double")
        assert found["2/js-1:0"] == pytest.approx(want[0], rel=1e-6)
        assert found["2/px-1:1"] == pytest.approx(want[1], rel=1e-12)
    finally:
        stop_process(proc)
        await channel.close()
        for listener in listeners:
            await listener.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.stop()
    assert proc.returncode == 0, log.read_text()[-3000:]


async def _ready(stub: pb_grpc.GRPCInferenceServiceStub) -> bool:
    return (await stub.ServerReady(pb.ServerReadyRequest(), timeout=2)).ready
