"""Fleet routing (core/fleet_router.py through InferenceService): a request to the fleet splits
its rows by partition column among the partitions' production models, the global model answering
the rest, answers in request order; the prediction log names the partition model, its version
and the fleet; a missing partition column is INVALID_ARGUMENT, a value nobody answers NOT_FOUND.
Real tiny ridge regressors in a fake registry and an in-memory store."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiokafka import ConsumerRecord
from serving_models import (
    FLEET,
    FleetModels,
    FleetServing,
    fleet_regressor,
    make_pipeline,
    make_regressor,
    training_frame,
)

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters import pb as converters
from driftloop.services.serving.adapters import v2_json
from driftloop.services.serving.adapters.kafka_inference import KafkaInference
from driftloop.services.serving.core.fleet_router import ANSWERED_BY
from driftloop.shared.bus import topics
from driftloop.shared.errors import Conflict, InvalidInput, NotFound

pytestmark = pytest.mark.unit

P1, P2, P3 = (f"{FLEET}/route_id={r}" for r in (1, 2, 3))
GLOBAL = fleet_regressor(1000.0)
ROUTE_1, ROUTE_2 = fleet_regressor(100.0), fleet_regressor(200.0)


async def served(models: FleetModels, *, batching: bool = False) -> FleetServing:
    """Serving's core parts as main.py wires them, reconciled once with the fake registry."""
    return await FleetServing(models, batching=batching).start()


def standard() -> FleetModels:
    models = FleetModels()
    models.add(FLEET, "4", GLOBAL)
    models.add(P1, "2", ROUTE_1)
    models.add(P2, "7", ROUTE_2)
    return models


ROWS = [(2, 0.5, 1.0), (3, -1.0, 0.0), (1, 0.0, 2.0), (2, 1.5, -1.0), (1, 3.0, 3.0)]
"""(route_id, x1, x2): route 3 has no partition model, so the global model answers it."""


def request(
    rows: list[tuple[Any, float, float]] = ROWS,
    *,
    model: str = FLEET,
    rid: str = "req",
    raw: bool = False,
    route: str = "INT64",
) -> pb.ModelInferRequest:
    """One input per feature plus the partition column (`route`: its V2 datatype)."""
    req = pb.ModelInferRequest(model_name=model, id=rid)
    columns = [("route_id", route, [r[0] for r in rows])] if route else []
    columns += [("x1", "FP64", [r[1] for r in rows]), ("x2", "FP64", [r[2] for r in rows])]
    for name, datatype, values in columns:
        tensor = req.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        if datatype == "BYTES":
            encoded = [str(v).encode() for v in values]
            if raw:
                req.raw_input_contents.append(
                    b"".join(len(v).to_bytes(4, "little") + v for v in encoded)
                )
            else:
                tensor.contents.bytes_contents.extend(encoded)
        elif raw:
            dtype = "<i8" if datatype == "INT64" else "<f8"
            req.raw_input_contents.append(np.asarray(values, dtype=dtype).tobytes())
        elif datatype == "INT64":
            tensor.contents.int64_contents.extend(values)
        else:
            tensor.contents.fp64_contents.extend(values)
    return req


def expected(pipeline: Any, rows: list[tuple[Any, float, float]]) -> np.ndarray:
    frame = pd.DataFrame([r[1:] for r in rows], columns=["x1", "x2"])
    return np.asarray(pipeline.predict(frame), dtype=np.float64)


def by_route(route: Any) -> Any:
    return {1: ROUTE_1, 2: ROUTE_2}.get(route, GLOBAL)


async def ask(s: FleetServing, req: pb.ModelInferRequest) -> pb.ModelInferResponse:
    result = await s.service.infer_async(converters.to_inference_request(req))
    return converters.to_infer_response(req, result)


def numbers(response: pb.ModelInferResponse) -> np.ndarray:
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[0], dtype="<f8")
    return np.asarray(response.outputs[0].contents.fp64_contents)


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("route", ["INT64", "FP64", "BYTES"])
async def test_rows_go_to_their_partitions_and_come_back_in_order(raw: bool, route: str) -> None:
    s = await served(standard())
    response = await ask(s, request(raw=raw, route=route))
    want = np.array([expected(by_route(r[0]), [r])[0] for r in ROWS])
    assert np.allclose(numbers(response), want, rtol=1e-9, atol=1e-9)
    assert (response.model_name, response.model_version) == (FLEET, "")
    assert response.outputs[0].name == "prediction" and list(response.outputs[0].shape) == [5]
    assert json.loads(response.parameters[ANSWERED_BY].string_param) == {
        P2: "7",
        FLEET: "4",
        P1: "2",
    }


async def test_partition_rows_are_logged_under_the_partition_with_the_fleet() -> None:
    s = await served(standard())
    await ask(s, request())
    await s.logger.flush()
    logged = {(m, v, f): t for m, v, f, t in s.sink.logs}
    assert set(logged) == {(P2, "7", FLEET), (P1, "2", FLEET), (FLEET, "4", "")}
    # each row keeps its place in the request: the labels of the fleet request join on it
    assert logged[(P2, "7", FLEET)]["_request_id"] == ["req:0", "req:3"]
    assert logged[(P1, "2", FLEET)]["_request_id"] == ["req:2", "req:4"]
    assert logged[(FLEET, "4", "")]["_request_id"] == ["req:1"]
    assert logged[(P1, "2", FLEET)]["x1"] == [0.0, 3.0]
    assert "route_id" not in logged[(P1, "2", FLEET)]  # not a feature of these models
    assert np.allclose(
        logged[(P1, "2", FLEET)]["_prediction"], expected(ROUTE_1, [ROWS[2], ROWS[4]])
    )


async def test_an_unnamed_split_request_gets_one_id_for_all_its_rows() -> None:
    s = await served(standard())
    await ask(s, request(rid=""))
    await s.logger.flush()
    ids = sorted(i for *_, table in s.sink.logs for i in table["_request_id"])
    assert len({i.rsplit(":", 1)[0] for i in ids}) == 1
    assert sorted(int(i.rsplit(":", 1)[1]) for i in ids) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("batching", [False, True])
async def test_a_request_all_of_one_partition_is_answered_and_logged_as_one(batching: bool) -> None:
    s = await served(standard(), batching=batching)
    rows = [(1, 0.5, 0.5), (1.0, -0.5, 1.0)]  # 1 and 1.0 name the same partition
    response = await ask(s, request(rows, route="FP64", rid="one"))
    assert np.allclose(numbers(response), expected(ROUTE_1, rows))
    assert (response.model_name, response.model_version) == (FLEET, "2")
    assert json.loads(response.parameters[ANSWERED_BY].string_param) == {P1: "2"}
    await s.logger.flush()
    [(model, version, fleet, table)] = s.sink.logs
    assert (model, version, fleet, table["_request_id"]) == (P1, "2", FLEET, ["one:0", "one:1"])


async def test_a_request_to_a_partition_is_served_by_it_or_by_the_global_model() -> None:
    s = await served(standard())
    rows = [(0, 0.25, -0.5)]
    direct = await ask(s, request(rows, model=P2, route=""))
    assert np.allclose(numbers(direct), expected(ROUTE_2, rows))
    assert (direct.model_name, direct.model_version) == (P2, "7")
    # the partition column may come along although the model does not take it
    assert np.allclose(numbers(await ask(s, request(rows, model=P2))), expected(ROUTE_2, rows))
    # no production version for route 3: the global model answers a request to it
    fallback = await ask(s, request(rows, model=P3, route=""))
    assert np.allclose(numbers(fallback), expected(GLOBAL, rows))
    assert (fallback.model_name, fallback.model_version) == (P3, "4")
    assert json.loads(fallback.parameters[ANSWERED_BY].string_param) == {FLEET: "4"}
    await s.logger.flush()
    assert [(m, f) for m, _, f, _ in s.sink.logs] == [(P2, ""), (FLEET, "")]


async def test_the_partition_column_can_be_a_feature_inside_one_tensor() -> None:
    features = ("route_id", "x1", "x2")
    models = FleetModels()
    models.add(FLEET, "1", fleet_regressor(1000.0, features))
    models.add(P1, "1", fleet_regressor(100.0, features))
    s = await served(models)
    rows = [(1.0, 0.5, 1.0), (2.0, 0.5, 1.0)]
    req = pb.ModelInferRequest(model_name=FLEET, id="t")
    tensor = req.inputs.add(name="input", datatype="FP64", shape=[2, 3])
    tensor.contents.fp64_contents.extend([v for row in rows for v in row])
    answer = numbers(await ask(s, req))
    frame = pd.DataFrame(rows, columns=list(features))
    assert answer[0] == pytest.approx(fleet_regressor(100.0, features).predict(frame)[0])
    assert answer[1] == pytest.approx(fleet_regressor(1000.0, features).predict(frame)[1])


async def test_a_missing_partition_column_is_invalid_input_naming_it() -> None:
    s = await served(standard())
    with pytest.raises(InvalidInput, match="partition column 'route_id' is missing"):
        await ask(s, request(route=""))
    # one [N, F] tensor of the features, which do not include the column
    req = pb.ModelInferRequest(model_name=FLEET)
    req.inputs.add(name="input", datatype="FP64", shape=[1, 2]).contents.fp64_contents.extend(
        [1.0, 2.0]
    )
    with pytest.raises(InvalidInput, match="'route_id'"):
        await ask(s, req)


async def test_unknown_values_fall_back_to_the_global_model_or_are_not_found() -> None:
    s = await served(standard())
    rows = [(99, 0.0, 0.0), (float("nan"), 1.0, 1.0), (1, 0.0, 0.0)]
    answer = numbers(await ask(s, request(rows, route="FP64")))
    assert np.allclose(answer[:2], expected(GLOBAL, rows[:2]))
    assert answer[2] == pytest.approx(expected(ROUTE_1, rows[2:])[0])
    models = FleetModels()
    models.add(P1, "1", ROUTE_1)  # no global model
    s = await served(models)
    with pytest.raises(NotFound, match="route_id=99"):
        await ask(s, request([(1, 0.0, 0.0), (99, 0.0, 0.0)]))
    with pytest.raises(NotFound, match=r"route_id=3.*no global production version"):
        await ask(s, request([(3, 0.0, 0.0)], model=P3, route=""))


async def test_bad_partition_inputs_are_invalid_input_not_a_crash() -> None:
    s = await served(standard())
    short = request()
    short.inputs[1].shape[0] = 4  # x1 claims 4 rows, route_id has 5
    del short.inputs[1].contents.fp64_contents[4]
    with pytest.raises(InvalidInput, match="'x1' has 4 rows"):
        await ask(s, short)
    wide = request()
    wide.inputs[0].shape[:] = [5, 2]
    with pytest.raises(InvalidInput, match=r"'route_id'.*\[N\] or \[N, 1\]"):
        await ask(s, wide)
    with pytest.raises(InvalidInput, match="canonical"):
        await ask(s, request(model=f"{FLEET}/route_id=%41"))


async def test_json_requests_to_a_fleet_name_the_answering_models() -> None:
    s = await served(standard())
    body = {
        "inputs": [
            {"name": "route_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            {"name": "x1", "shape": [2], "datatype": "FP64", "data": [0.0, 0.0]},
            {"name": "x2", "shape": [2], "datatype": "FP64", "data": [1.0, 1.0]},
        ]
    }
    parsed = v2_json.to_inference_request(body, model=FLEET, version="", request_id="j")
    reply = v2_json.to_response(parsed, await s.service.infer_async(parsed.request))
    rows = [(1, 0.0, 1.0), (2, 0.0, 1.0)]
    want = [expected(ROUTE_1, rows[:1])[0], expected(ROUTE_2, rows[1:])[0]]
    assert reply["outputs"][0]["data"] == pytest.approx(want)
    assert json.loads(reply["parameters"][ANSWERED_BY]) == {P1: "2", P2: "7"}


async def test_metadata_and_readiness_of_fleets_and_partitions() -> None:
    s = await served(standard())
    view = await s.service.view(FLEET, "")
    assert view.loaded.model == FLEET and view.extra_inputs == (("route_id", "FP64"),)
    meta = converters.to_model_metadata(
        view.loaded, view.versions, name=view.name, extra_inputs=view.extra_inputs
    )
    assert [i.name for i in meta.inputs] == ["x1", "x2", "route_id"] and meta.name == FLEET
    assert s.service.ready(FLEET, "") and s.service.ready(P1, "") and s.service.ready(P3, "")
    assert not s.service.ready(f"{FLEET}/route_id=1", "9")
    assert (await s.service.view(P1, "")).loaded.model == P1
    assert s.service.check_counts(FLEET, "", 3, 1) is None  # features plus the column


async def test_partitions_of_a_classifier_fleet_merge_their_probabilities() -> None:
    """A partition that never saw a class answers 0 for it; the union keeps first-seen order."""
    frame, target = training_frame()
    models = FleetModels()
    models.add(FLEET, "1", make_pipeline())
    only_no = make_pipeline().fit(frame, np.where(frame["x1"] > 0, "no", "maybe"))
    models.add(P1, "1", only_no)
    s = await served(models)
    req = pb.ModelInferRequest(model_name=FLEET, id="c")
    for name, datatype, values in (
        ("route_id", "INT64", [1, 2]),
        ("x1", "FP64", [1.0, 1.0]),
        ("color", "BYTES", [b"red", b"red"]),
        ("x2", "FP64", [0.0, 0.0]),
    ):
        t = req.inputs.add(name=name, datatype=datatype, shape=[2])
        if datatype == "BYTES":
            t.contents.bytes_contents.extend(values)
        elif datatype == "INT64":
            t.contents.int64_contents.extend(values)
        else:
            t.contents.fp64_contents.extend(values)
    result = await s.service.infer_async(converters.to_inference_request(req))
    labels, proba = result.outputs
    assert result.classes == ("maybe", "no", "yes")  # route 1's classes first: row 0 is its
    assert list(proba.shape) == [2, 3]
    matrix = proba.data.reshape(2, 3)
    assert matrix[0, 2] == 0.0 and matrix[1, 0] == 0.0  # route 1 never saw "yes", global "maybe"
    assert np.allclose(matrix.sum(axis=1), 1.0)
    assert [v.decode() for v in labels.data] == ["no", "yes"]


async def test_models_answering_different_outputs_are_a_conflict() -> None:
    models = FleetModels()
    models.add(FLEET, "1", make_regressor())
    models.add(P1, "1", make_pipeline())  # a classifier partition in a regression fleet
    s = await served(models)
    req = request([(1, 0.0, 0.0), (2, 0.0, 0.0)])
    req.inputs.add(name="color", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [b"red", b"red"]
    )
    with pytest.raises(Conflict, match="different outputs"):
        await s.service.infer_async(converters.to_inference_request(req))


async def test_a_large_request_is_split_the_same_way() -> None:
    """Above SMALL_REQUEST rows the keys are grouped by pandas: same answers, same order."""
    s = await served(standard())
    rng = np.random.default_rng(3)
    routes: list[Any] = [[1, 2, 3, float("nan")][i % 4] for i in range(600)]
    xs = rng.normal(size=(600, 2)).tolist()
    rows = [(r, a, b) for r, (a, b) in zip(routes, xs, strict=True)]
    answer = numbers(await ask(s, request(rows, route="FP64", rid="big")))
    want = [expected(by_route(r[0]), [r])[0] for r in rows]
    assert np.allclose(answer, want, rtol=1e-9, atol=1e-9)
    await s.logger.flush()
    ids = {m: t["_request_id"] for m, _, _, t in s.sink.logs}
    assert ids[P1][:2] == ["big:0", "big:4"] and len(ids[FLEET]) == 300


async def test_a_value_too_long_to_name_a_partition_goes_to_the_global_model() -> None:
    s = await served(standard())
    long = "9" * 5000
    rows = [(long, 0.5, 0.5), ("1", 0.5, 0.5)]
    answer = numbers(await ask(s, request(rows, route="BYTES")))
    assert np.allclose(answer, [expected(GLOBAL, rows)[0], expected(ROUTE_1, rows)[1]])
    models = FleetModels()
    models.add(P1, "1", ROUTE_1)
    s = await served(models)
    with pytest.raises(NotFound) as missing:
        await ask(s, request(rows, route="BYTES"))
    assert "(5000 characters)" in str(missing.value) and len(str(missing.value)) < 600


class RawPublished:
    """Stands in for EventPublisher.publish_raw."""

    def __init__(self) -> None:
        self.sent: dict[bytes | None, bytes] = {}

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent[key] = value


def kafka_record(value: bytes, offset: int) -> Any:
    return ConsumerRecord(
        topics.INFERENCE_REQUESTS, 0, offset, 0, 0, None, value, None, 0, len(value), ()
    )


async def test_kafka_requests_to_a_fleet_are_routed_and_refused_in_kind() -> None:
    s = await served(standard(), batching=True)
    published = RawPublished()
    kafka = KafkaInference(s.service, published)  # type: ignore[arg-type]
    body = {
        "id": "kj",
        "model_name": FLEET,
        "inputs": [
            {"name": "route_id", "shape": [2], "datatype": "BYTES", "data": ["3", "2"]},
            {"name": "x1", "shape": [2], "datatype": "FP64", "data": [0.5, 0.5]},
            {"name": "x2", "shape": [2], "datatype": "FP64", "data": [0.0, 0.0]},
        ],
    }
    missing = request(rid="kp", route="")
    await kafka.handle_records(
        [kafka_record(json.dumps(body).encode(), 1), kafka_record(missing.SerializeToString(), 2)]
    )
    answer = json.loads(published.sent[b"kj"])
    rows = [(3, 0.5, 0.0), (2, 0.5, 0.0)]
    want = [expected(GLOBAL, rows)[0], expected(ROUTE_2, rows)[1]]
    assert answer["outputs"][0]["data"] == pytest.approx(want)
    assert json.loads(answer["parameters"][ANSWERED_BY]) == {FLEET: "4", P2: "7"}
    refused = pb.ModelInferResponse.FromString(published.sent[b"kp"])
    assert refused.parameters["status"].string_param == "INVALID_ARGUMENT"
    assert "'route_id'" in refused.parameters["error"].string_param
