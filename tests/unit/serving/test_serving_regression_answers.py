"""A regressor's answers: V2 output `prediction` FP64 [N] for both request styles and every
numeric datatype, in protobuf (typed and raw), in V2 JSON and on the Kafka path; ModelMetadata
declares it; a classifier and a regressor of one name swap without a failed request (production
answers as what it is; a request pinned to the other version gets that version's outputs)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiokafka import ConsumerRecord
from serving_models import FEATURES, make_pipeline, make_regressor, regression_frame

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters import pb as converters
from driftloop.services.serving.adapters import v2_json
from driftloop.services.serving.adapters.kafka_inference import KafkaInference
from driftloop.services.serving.core import codec, outputs
from driftloop.services.serving.core.batching import BatchPolicy
from driftloop.services.serving.core.deployment import Deployer
from driftloop.services.serving.core.inference import InferenceResult, InferenceService
from driftloop.services.serving.core.prediction_log import PredictionLogger
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.bus import topics
from driftloop.shared.errors import InvalidInput
from driftloop.shared.records import ipc_to_table

pytestmark = pytest.mark.unit

REGRESSOR = make_regressor()
CLASSIFIER = make_pipeline()
ROWS = [(1.5, "red", -0.5), (-2.0, "blue", 0.25), (0.0, "green", 3.0)]


def loaded(pipeline: Any, version: str = "1", model: str = "price") -> LoadedModel:
    return LoadedModel(model, version, pipeline, artifacts.signature(pipeline), f"sha{version}")


def served(*versions: LoadedModel, **options: Any) -> InferenceService:
    slot = ModelSlot()
    for version in versions:
        slot.swap(version)
    return InferenceService(slot, **options)


def expected(pipeline: Any, rows: list[tuple[float, str, float]] = ROWS) -> np.ndarray:
    return np.asarray(pipeline.predict(pd.DataFrame(rows, columns=FEATURES)), dtype=np.float64)


def request(
    rows: list[tuple[float, str, float]] = ROWS,
    *,
    model: str = "price",
    version: str = "",
    rid: str = "r-1",
    wanted: tuple[str, ...] = (),
) -> codec.InferenceRequest:
    """One input per feature: x1 FP64, color BYTES, x2 FP64."""
    return codec.InferenceRequest(
        model,
        version,
        rid,
        (
            codec.InputTensor("x1", "FP64", (len(rows),), {"fp64_contents": [r[0] for r in rows]}),
            codec.InputTensor(
                "color", "BYTES", (len(rows),), {"bytes_contents": [r[1].encode() for r in rows]}
            ),
            codec.InputTensor("x2", "FP64", (len(rows),), {"fp64_contents": [r[2] for r in rows]}),
        ),
        outputs=wanted,
    )


def pb_request(rows: list[tuple[float, str, float]] = ROWS, *, raw: bool = False) -> Any:
    req = pb.ModelInferRequest(model_name="price", id="pb-1")
    req.parameters["trace"].string_param = "t-1"
    columns = (
        ("x1", "FP64", [r[0] for r in rows]),
        ("color", "BYTES", [r[1].encode() for r in rows]),
        ("x2", "FP64", [r[2] for r in rows]),
    )
    for name, datatype, values in columns:
        tensor = req.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
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
    return req


def test_a_regressor_answers_one_fp64_number_per_row() -> None:
    answer = served(loaded(REGRESSOR)).infer(request())
    [out] = answer.outputs
    assert (out.name, out.datatype, out.shape) == ("prediction", "FP64", (3,))
    assert out.data.dtype == np.float64
    np.testing.assert_array_equal(out.data, expected(REGRESSOR))
    assert answer.classes == ()
    # asked for by name, it is the same; a classifier's output names are refused, saying why
    named = served(loaded(REGRESSOR)).infer(request(wanted=("prediction",)))
    np.testing.assert_array_equal(named.outputs[0].data, out.data)
    for wrong in ("label", "probabilities"):
        with pytest.raises(InvalidInput, match=rf"\['{wrong}'\]: available are \['prediction'\]"):
            served(loaded(REGRESSOR)).infer(request(wanted=(wrong,)))


def test_protobuf_answers_typed_and_raw_and_metadata_declares_the_output() -> None:
    service = served(loaded(REGRESSOR))
    want = expected(REGRESSOR)
    typed = pb_request()
    reply = converters.to_infer_response(
        typed, service.infer(converters.to_inference_request(typed))
    )
    [out] = reply.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("prediction", "FP64", [3])
    assert list(out.contents.fp64_contents) == want.tolist()
    assert converters.CLASSES not in out.parameters and not reply.raw_output_contents
    assert reply.parameters["trace"].string_param == "t-1"
    raw = pb_request(raw=True)
    reply = converters.to_infer_response(raw, service.infer(converters.to_inference_request(raw)))
    assert list(reply.outputs[0].shape) == [3] and not reply.outputs[0].contents.fp64_contents
    assert reply.raw_output_contents[0] == want.astype("<f8").tobytes()

    meta = converters.to_model_metadata(service.slot.get("price"), ["1"])
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("prediction", "FP64", [-1])
    ]
    assert [(t.name, t.datatype) for t in meta.inputs] == [
        ("x1", "FP64"),
        ("color", "BYTES"),
        ("x2", "FP64"),
    ]


def test_v2_json_answers_numbers_and_null_for_what_json_cannot_hold() -> None:
    body = {
        "id": "j-1",
        "inputs": [
            {"name": "x1", "shape": [3], "datatype": "FP64", "data": [r[0] for r in ROWS]},
            {"name": "color", "shape": [3, 1], "datatype": "BYTES", "data": [[r[1]] for r in ROWS]},
            {"name": "x2", "shape": [3], "datatype": "FP32", "data": [r[2] for r in ROWS]},
        ],
    }
    parsed = v2_json.to_inference_request(body, model="price", version="", request_id="k")
    answer = served(loaded(REGRESSOR)).infer(parsed.request)
    response = json.loads(v2_json.dumps(v2_json.to_response(parsed, answer)))
    [out] = response["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("prediction", "FP64", [3])
    assert out["data"] == expected(REGRESSOR).tolist() and "parameters" not in out
    # a regressor can overflow to inf (or answer NaN): JSON has neither, so it is null
    odd = InferenceResult(
        "price",
        "1",
        outputs.encode_outputs(["prediction"], np.array([1.5, np.inf, np.nan]), np.empty((3, 0))),
    )
    text = v2_json.dumps(v2_json.to_response(parsed, odd))
    assert json.loads(text)["outputs"][0]["data"] == [1.5, None, None]
    assert b"Infinity" not in text and b"NaN" not in text


class Published:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))


def record(value: bytes, key: bytes) -> Any:
    return ConsumerRecord(
        topics.INFERENCE_REQUESTS, 0, 1, 0, 0, key, value, None, 0, len(value), ()
    )


async def test_the_kafka_path_answers_numbers_in_json_and_in_protobuf() -> None:
    service = served(loaded(REGRESSOR), batching=BatchPolicy(max_batch_size=64))
    published = Published()
    kafka = KafkaInference(service, published)  # type: ignore[arg-type]
    body = {
        "model_name": "price",
        "inputs": [
            {
                "name": "features",
                "shape": [3, 3],
                "datatype": "BYTES",
                "data": [[str(r[0]), r[1], str(r[2])] for r in ROWS],
            }
        ],
    }
    await kafka.handle_records(
        [
            record(json.dumps(body).encode(), b"js-1"),
            record(pb_request().SerializeToString(), b"pb-1"),
        ]
    )
    want = expected(REGRESSOR).tolist()
    answer = json.loads(published.sent[0][2])
    assert answer["id"] == "js-1" and answer["outputs"][0]["data"] == want
    reply = pb.ModelInferResponse.FromString(published.sent[1][2])
    assert reply.outputs[0].datatype == "FP64"
    assert list(reply.outputs[0].contents.fp64_contents) == want


class Sink:
    def __init__(self) -> None:
        self.logs: list[tuple[str, Any]] = []

    async def __call__(self, model: str, version: str, ipc: bytes, rows: int) -> None:
        self.logs.append((version, ipc_to_table(ipc)))


async def test_a_classifier_and_a_regressor_of_one_name_swap_without_a_failed_request() -> None:
    """Production answers as what it is: after the swap every request without a version gets
    `prediction`; version 1 (kept for rollback) still answers `label` when asked by version;
    requests already in a micro-batch finish on the version they started with, both ways."""
    blobs = {"k1": artifacts.dump_model(CLASSIFIER), "k2": artifacts.dump_model(REGRESSOR)}

    async def fetch(key: str) -> bytes:
        return blobs[key]

    async def load(data: bytes, sha: str) -> Any:
        return await asyncio.to_thread(artifacts.load_model, data, sha)

    def kinds(results: list[Any]) -> set[tuple[str, tuple[str, ...]]]:
        return {(r.version, tuple(o.name for o in r.outputs)) for r in results}

    classify = ("1", ("label", "probabilities"))
    regress = ("2", ("prediction",))
    sink = Sink()
    slot = ModelSlot()
    deployer = Deployer(slot, fetch, load)
    service = InferenceService(
        slot, PredictionLogger(sink), batching=BatchPolicy(max_batch_size=64)
    )
    await deployer.deploy("price", "1", "k1", artifacts.sha256(blobs["k1"]))
    # requests in flight while version 2 loads are answered by version 1
    *during, done = await asyncio.gather(
        *(service.infer_async(request(rid=f"a{i}")) for i in range(20)),
        deployer.deploy("price", "2", "k2", artifacts.sha256(blobs["k2"])),
    )
    assert done.swapped and kinds(during) == {classify}
    after = await asyncio.gather(*(service.infer_async(request(rid=f"b{i}")) for i in range(20)))
    assert kinds(after) == {regress}
    np.testing.assert_allclose(after[0].outputs[0].data, expected(REGRESSOR), rtol=1e-12)

    assert slot.production_version("price") == "2" and slot.versions("price") == ["2", "1"]
    meta = converters.to_model_metadata(slot.get("price"), slot.versions("price"))
    assert [o.name for o in meta.outputs] == ["prediction"]
    pinned = await service.infer_async(request(version="1", wanted=("label",)))
    assert pinned.version == "1" and pinned.outputs[0].datatype == "BYTES"
    with pytest.raises(InvalidInput, match="available are \\['prediction'\\]"):
        await service.infer_async(request(wanted=("label",)))

    # a rollback to the loaded classifier swaps at once (no await): the requests decoded
    # before it sit in the regressor's open batch, those after in the classifier's
    mixed = await asyncio.gather(
        *(service.infer_async(request(rid=f"c{i}")) for i in range(10)),
        deployer.deploy("price", "1", "k1", artifacts.sha256(blobs["k1"])),
        *(service.infer_async(request(rid=f"d{i}")) for i in range(10)),
    )
    assert mixed[10].swapped
    assert kinds(mixed[:10]) == {regress} and kinds(mixed[11:]) == {classify}

    await service._logger.flush()  # type: ignore[union-attr]
    logged = {(v, str(table.schema.field("_prediction").type)) for v, table in sink.logs}
    assert logged == {("1", "string"), ("2", "double")}


def test_a_regressor_trained_on_its_own_frame_answers_what_it_was_fitted_to() -> None:
    """The fixture is a real regressor: close to its training target, not a constant."""
    frame, target = regression_frame()
    rows = [tuple(r) for r in frame[FEATURES].head(50).itertuples(index=False)]
    answer = served(loaded(REGRESSOR)).infer(request(rows))  # type: ignore[arg-type]
    predicted = answer.outputs[0].data
    assert np.std(predicted) > 10 and np.mean(np.abs(predicted - target[:50])) < 15
