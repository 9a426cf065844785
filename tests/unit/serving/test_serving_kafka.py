"""The Kafka inference adapter without a broker: JSON and protobuf requests answered in kind,
ids echoed and used as keys, bad requests answered with a status, garbage refused as undecodable."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_models import make_pipeline

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters import v2_json
from driftloop.services.serving.adapters.kafka_inference import KafkaInference, parse_record
from driftloop.services.serving.core.batching import BatchPolicy
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.prediction_log import PredictionLogger, PredictionRecord
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.bus import topics
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit

PIPELINE = make_pipeline()


class Published:
    """Stands in for EventPublisher.publish_raw."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))


class Logged(PredictionLogger):
    def __init__(self) -> None:
        super().__init__(self._never)
        self.records: list[PredictionRecord] = []

    @staticmethod
    async def _never(*_: Any) -> None:
        raise AssertionError("not flushed in these tests")

    def offer(self, record: PredictionRecord) -> bool:
        self.records.append(record)
        return True


def record(value: bytes, key: bytes | None = None, headers: Any = (), offset: int = 7) -> Any:
    return ConsumerRecord(
        topics.INFERENCE_REQUESTS, 1, offset, 0, 0, key, value, None, 0, len(value), headers
    )


def json_request(rid: str = "j-1", **extra: Any) -> bytes:
    body = {
        "id": rid,
        "model_name": "m",
        "parameters": {"trace": "abc"},
        "inputs": [
            {"name": "x1", "shape": [2], "datatype": "FP64", "data": [1.5, None]},
            {"name": "color", "shape": [2, 1], "datatype": "BYTES", "data": [["red"], ["blue"]]},
            {"name": "x2", "shape": [2], "datatype": "INT64", "data": [1, -2]},
        ],
        **extra,
    }
    return json.dumps(body).encode()


def pb_request(rid: str = "p-1", model: str = "m") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, id=rid)
    req.parameters["trace"].string_param = "xyz"
    req.inputs.add(name="features", datatype="BYTES", shape=[1, 3]).contents.bytes_contents.extend(
        [b"0.5", b"red", b"0.5"]
    )
    return req


def adapter() -> tuple[KafkaInference, Published, Logged]:
    slot = ModelSlot()
    slot.swap(LoadedModel("m", "1", PIPELINE, artifacts.signature(PIPELINE), "sha"))
    logged = Logged()
    published = Published()
    service = InferenceService(slot, logged, batching=BatchPolicy(max_batch_size=64))
    return KafkaInference(service, published), published, logged  # type: ignore[arg-type]


async def test_json_and_protobuf_answered_in_kind_in_one_batch_and_logged_once() -> None:
    kafka, published, logged = adapter()
    await kafka.handle_records([record(json_request()), record(pb_request().SerializeToString())])
    assert [(t, k) for t, k, _ in published.sent] == [
        (topics.INFERENCE_RESPONSES, b"j-1"),
        (topics.INFERENCE_RESPONSES, b"p-1"),
    ]
    body = json.loads(published.sent[0][2])
    assert (body["id"], body["model_name"], body["model_version"]) == ("j-1", "m", "1")
    assert body["parameters"] == {"trace": "abc"}
    label, proba = body["outputs"]
    assert label["name"] == "label" and label["shape"] == [2] and len(label["data"]) == 2
    assert set(label["data"]) <= {"yes", "no"}
    assert proba["shape"] == [2, 2] and len(proba["data"]) == 4
    reply = pb.ModelInferResponse.FromString(published.sent[1][2])
    assert (reply.id, reply.model_version) == ("p-1", "1")
    assert reply.parameters["trace"].string_param == "xyz"
    assert len(reply.outputs[0].contents.bytes_contents) == 1
    # the two requests were micro-batched into one predict call, logged as one record
    [logged_record] = logged.records
    assert logged_record.parts == (("j-1", 2), ("p-1", 1))


async def test_requested_outputs_and_model_from_header_and_id_from_key() -> None:
    kafka, published, _ = adapter()
    body = json.loads(json_request(outputs=[{"name": "probabilities"}]))
    del body["id"], body["model_name"]
    await kafka.handle_records(
        [record(json.dumps(body).encode(), key=b"k-9", headers=[("model_name", b"m")])]
    )
    [(_, key, value)] = published.sent
    answer = json.loads(value)
    assert key == b"k-9" and answer["id"] == "k-9"
    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]


async def test_bad_requests_get_error_responses_with_the_status_name() -> None:
    kafka, published, _ = adapter()
    unknown = pb_request("p-2", model="nope").SerializeToString()
    wrong = json_request("j-2").replace(b'"FP64"', b'"FP16"')
    no_key_no_id = json.dumps({"model_name": "m", "inputs": "x"}).encode()
    await kafka.handle_records([record(unknown), record(wrong), record(no_key_no_id, offset=12)])
    reply = pb.ModelInferResponse.FromString(published.sent[0][2])
    assert reply.id == "p-2" and not reply.outputs
    assert reply.parameters["status"].string_param == "NOT_FOUND"
    assert "model 'nope' is not served" in reply.parameters["error"].string_param
    body = json.loads(published.sent[1][2])
    assert (body["id"], body["status"]) == ("j-2", "INVALID_ARGUMENT")
    assert "'FP16' is not supported" in body["error"]
    key, body = published.sent[2][1], json.loads(published.sent[2][2])
    assert key == f"{topics.INFERENCE_REQUESTS}:1:12".encode() and body["id"] == key.decode()
    assert body["status"] == "INVALID_ARGUMENT" and '"inputs"' in body["error"]


@pytest.mark.parametrize(
    "value", [b"", b"\xff\xff\xff\xff", b"{not json", b'["a", 1]', b"\x7a\x03abc"]
)
def test_garbage_is_undecodable(value: bytes) -> None:
    with pytest.raises(v2_json.Undecodable):
        parse_record(record(value))


async def test_a_batch_with_garbage_fails_untouched_so_the_bus_retries_one_by_one() -> None:
    kafka, published, _ = adapter()
    with pytest.raises(v2_json.Undecodable):
        await kafka.handle_records([record(json_request()), record(b"\xff\xff")])
    assert published.sent == []


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"name": "a", "shape": [1], "datatype": "FP64", "data": ["1"]}, "JSON numbers"),
        ({"name": "a", "shape": [1], "datatype": "INT32", "data": [1.5]}, "JSON integers"),
        ({"name": "a", "shape": [1], "datatype": "BOOL", "data": [1]}, "true/false"),
        ({"name": "a", "shape": [1], "datatype": "BYTES", "data": [1]}, "JSON strings"),
        ({"name": "a", "shape": [2], "datatype": "FP64", "data": [[1], [2, 3]]}, "rectangular"),
        ({"name": "a", "shape": "2", "datatype": "FP64", "data": [1]}, "list of integers"),
        ({"name": "a", "shape": [1], "datatype": "FP64"}, 'no "data"'),
        ("a", "must be an object"),
    ],
)
def test_json_tensor_errors_name_the_input(tensor: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        v2_json.to_inference_request({"inputs": [tensor]}, model="m", version="", request_id="r")


def test_json_typed_values_reach_the_codec() -> None:
    parsed = v2_json.to_inference_request(
        {"inputs": [{"name": "b", "shape": [2], "datatype": "BOOL", "data": [True, False]}]},
        model="m",
        version="2",
        request_id="r",
    )
    [tensor] = parsed.request.inputs
    assert list(tensor.contents["bool_contents"]) == [True, False]
    assert (parsed.request.model, parsed.request.version, parsed.request.id) == ("m", "2", "r")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
async def test_any_bytes_are_answered_or_undecodable(value: bytes) -> None:
    kafka, published, _ = adapter()
    try:
        await kafka.handle_records([record(value)])
    except v2_json.Undecodable:
        assert published.sent == []
        return
    [(_, _, reply)] = published.sent
    assert reply
