"""The V2 codec: every input form (typed, raw, BYTES, per feature, [N, F]), every error case,
and property tests that arbitrary requests fail only with InvalidInput."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_models import make_pipeline

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters import pb as converters
from driftloop.services.serving.core import codec
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.artifacts import Feature, ModelSignature
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit

MIXED = ModelSignature(
    (Feature("x1", "numeric"), Feature("color", "categorical"), Feature("x2", "numeric")),
    ("no", "yes"),
)
NUMERIC = ModelSignature((Feature("a", "numeric"), Feature("b", "numeric")), ("0", "1"))
PIPELINE = make_pipeline()
FIELD = {name: kind.field for name, kind in codec.DATATYPES.items()}


def tensor(name: str, datatype: str, shape: list[int], values: Any = None) -> Any:
    t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    if values is not None:
        getattr(t.contents, FIELD[datatype]).extend(values)
    return t


def request(
    *inputs: Any, raw: list[bytes] | None = None, outputs: tuple[str, ...] = (), **kw: Any
) -> Any:
    req = pb.ModelInferRequest(model_name="m", inputs=list(inputs), **kw)
    req.raw_input_contents.extend(raw or [])
    req.outputs.extend(pb.ModelInferRequest.InferRequestedOutputTensor(name=o) for o in outputs)
    return req


def decode(req: Any, signature: ModelSignature = MIXED) -> Any:
    return codec.decode_frame(converters.to_inference_request(req), signature)


def prefixed(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def service() -> InferenceService:
    slot = ModelSlot()
    slot.swap(LoadedModel("m", "1", PIPELINE, artifacts.signature(PIPELINE), "sha"))
    return InferenceService(slot)


# ---- accepted forms ---------------------------------------------------------------------------


def test_one_numeric_matrix_in_feature_order() -> None:
    frame = decode(request(tensor("input-0", "FP64", [2, 2], [1.0, 2.0, 3.0, 4.0])), NUMERIC)
    assert list(frame.columns) == ["a", "b"]
    assert frame["a"].tolist() == [1.0, 3.0] and frame["b"].tolist() == [2.0, 4.0]
    assert frame.dtypes.tolist() == [np.float64, np.float64]


def test_one_bytes_matrix_for_mixed_features() -> None:
    cells = [b"1.5", b"red", b"2", b"", b"blue", b"-1"]
    frame = decode(request(tensor("x", "BYTES", [2, 3], cells)))
    assert frame["x1"].tolist()[0] == 1.5 and np.isnan(frame["x1"].tolist()[1])
    assert frame["color"].tolist() == ["red", "blue"]
    assert frame["x2"].tolist() == [2.0, -1.0]


def test_one_input_per_feature_typed_in_any_order_and_datatype() -> None:
    frame = decode(
        request(
            tensor("x2", "INT64", [2], [7, 8]),
            tensor("color", "BYTES", [2, 1], [b"red", "grün".encode()]),
            tensor("x1", "FP32", [2], [0.5, float("nan")]),
        )
    )
    assert list(frame.columns) == ["x1", "color", "x2"]
    assert frame["x1"].tolist()[0] == 0.5 and np.isnan(frame["x1"].tolist()[1])
    assert frame["color"].tolist() == ["red", "grün"]
    assert frame["x2"].tolist() == [7.0, 8.0]


def test_raw_contents_per_feature_including_bytes() -> None:
    frame = decode(
        request(
            tensor("x1", "FP64", [2]),
            tensor("color", "BYTES", [2]),
            tensor("x2", "INT32", [2]),
            raw=[
                np.array([1.0, 2.0], "<f8").tobytes(),
                prefixed(b"red", b""),
                np.array([3, 4], "<i4").tobytes(),
            ],
        )
    )
    assert frame["x1"].tolist() == [1.0, 2.0]
    assert frame["color"].tolist() == ["red", ""]
    assert frame["x2"].tolist() == [3.0, 4.0]


def test_raw_matrix_fp32_and_bytes() -> None:
    raw = np.array([[1, 2], [3, 4], [5, 6]], "<f4").tobytes()
    frame = decode(request(tensor("m", "FP32", [3, 2]), raw=[raw]), NUMERIC)
    assert frame["b"].tolist() == [2.0, 4.0, 6.0]
    frame = decode(request(tensor("m", "BYTES", [1, 3]), raw=[prefixed(b"1", b"red", b"2")]))
    assert frame.iloc[0].tolist() == [1.0, "red", 2.0]


# ---- rejected requests ------------------------------------------------------------------------

ERRORS = [
    (request(), "no inputs"),
    (
        request(tensor("x1", "FP64", [1], [1.0]), tensor("bogus", "FP64", [1], [1.0])),
        "unknown input 'bogus'",
    ),
    (
        request(tensor("x1", "FP64", [1], [1.0]), tensor("x2", "FP64", [1], [1.0])),
        r"missing feature input\(s\) \['color'\]",
    ),
    (
        request(tensor("x", "BYTES", [2, 3], [b"1"] * 5)),
        r"input 'x': shape \[2, 3\] needs 6 elements but 5 were sent",
    ),
    (request(tensor("x", "FP16", [1, 3], None)), "input 'x': datatype 'FP16' is not supported"),
    (
        request(tensor("x", "BYTES", [1, 3], None), raw=[b"\x01\x00"]),
        "input 'x': raw BYTES content is truncated",
    ),
    (
        request(tensor("x", "BYTES", [1, 3], None), raw=[b"\x09\x00\x00\x00ab"]),
        "claims 9 bytes but only 2 remain",
    ),
    (
        request(
            tensor("x1", "FP64", [1], [1.0]),
            tensor("color", "BYTES", [2], [b"a", b"b"]),
            tensor("x2", "FP64", [1], [1.0]),
        ),
        "input 'color' has 2 rows but earlier inputs have 1",
    ),
    (request(tensor("x", "BYTES", [0, 3], [])), r"input 'x' has no rows \(N == 0\)"),
    (
        request(tensor("x", "FP64", [1, 3], [1.0, 2.0, 3.0])),
        "input 'x' is FP64 but feature 'color' is categorical",
    ),
    (
        request(tensor("x", "BYTES", [1, 3], [b"one", b"red", b"2"])),
        "input 'x': feature 'x1' is numeric but a value is not a number",
    ),
    (
        request(tensor("x", "BYTES", [1, 3], [b"1", b"\xff", b"2"])),
        "input 'x': feature 'color' has a value that is not UTF-8",
    ),
    (
        request(tensor("x", "BYTES", [1, 3], [b"inf", b"red", b"2"])),
        "input 'x': feature 'x1' has an infinite value",
    ),
    (
        request(tensor("x", "BYTES", [3], [b"1", b"red", b"2"])),
        r"input 'x' has shape \[3\]: a single input must be \[N, 3\]",
    ),
    (
        request(
            tensor("x1", "FP64", [1, 2], [1.0, 2.0]),
            tensor("color", "BYTES", [1], [b"a"]),
            tensor("x2", "FP64", [1], [1.0]),
        ),
        r"input 'x1' has shape \[1, 2\]: a per-feature input must be \[N\] or \[N, 1\]",
    ),
    (
        request(tensor("x1", "FP64", [1], [1.0]), tensor("x1", "FP64", [1], [1.0])),
        "input 'x1' is given twice",
    ),
    (request(tensor("x", "BYTES", [-1, 3], [])), "negative dim"),
]


@pytest.mark.parametrize(("req", "message"), ERRORS)
def test_bad_requests_say_what_is_wrong(req: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode(req)


def test_datatype_must_match_its_contents_field() -> None:
    with pytest.raises(
        InvalidInput,
        match="datatype FP64 but sends values in int64_contents; put them in fp64_contents",
    ):
        t = tensor("m", "FP64", [1, 2])
        t.contents.int64_contents.extend([1, 2])
        decode(request(t), NUMERIC)


def test_raw_length_must_be_a_multiple_of_the_element_size() -> None:
    message = "input 'm': raw content is 7 bytes, not a multiple of 8"
    with pytest.raises(InvalidInput, match=message):
        decode(request(tensor("m", "FP64", [1, 2]), raw=[b"\x00" * 7]), NUMERIC)


def test_raw_and_typed_contents_cannot_be_mixed() -> None:
    req = request(tensor("m", "FP64", [1, 2], [1.0, 2.0]), raw=[b"\x00" * 16])
    with pytest.raises(
        InvalidInput, match="input 'm' has typed contents while the request uses raw_input_contents"
    ):
        decode(req, NUMERIC)


def test_raw_contents_need_one_entry_per_input() -> None:
    req = request(tensor("a", "FP64", [1]), tensor("b", "FP64", [1]), raw=[b"\x00" * 8])
    message = "raw_input_contents has 1 entries but the request has 2"
    with pytest.raises(InvalidInput, match=message):
        decode(req, NUMERIC)


# ---- outputs and the full path through the service --------------------------------------------


def test_typed_request_gets_typed_outputs_with_id_and_parameters_echoed() -> None:
    req = request(
        tensor("x", "BYTES", [2, 3], [b"2", b"red", b"0", b"-2", b"blue", b"0"]), id="req-1"
    )
    req.parameters["trace"].string_param = "abc"
    result = service().infer(converters.to_inference_request(req))
    resp = converters.to_infer_response(req, result)
    assert (resp.model_name, resp.model_version, resp.id) == ("m", "1", "req-1")
    assert resp.parameters["trace"].string_param == "abc"
    label, proba = resp.outputs
    assert (label.name, label.datatype, list(label.shape)) == ("label", "BYTES", [2])
    assert list(label.contents.bytes_contents) == [b"yes", b"no"]
    assert (proba.name, proba.datatype, list(proba.shape)) == ("probabilities", "FP64", [2, 2])
    assert np.allclose(np.array(proba.contents.fp64_contents).reshape(2, 2).sum(axis=1), 1.0)
    assert not resp.raw_output_contents


def test_raw_request_gets_raw_outputs_in_requested_order() -> None:
    req = request(
        tensor("x", "BYTES", [1, 3]),
        raw=[prefixed(b"2", b"red", b"0")],
        outputs=("probabilities", "label"),
    )
    resp = converters.to_infer_response(req, service().infer(converters.to_inference_request(req)))
    assert [o.name for o in resp.outputs] == ["probabilities", "label"]
    proba = np.frombuffer(resp.raw_output_contents[0], "<f8")
    assert proba.shape == (2,) and np.isclose(proba.sum(), 1.0)
    assert codec.split_length_prefixed("label", resp.raw_output_contents[1]) == [b"yes"]
    assert not resp.outputs[0].HasField("contents")


def test_only_requested_outputs_and_unknown_ones_are_refused() -> None:
    req = request(tensor("x", "BYTES", [1, 3], [b"2", b"red", b"0"]), outputs=("label",))
    resp = converters.to_infer_response(req, service().infer(converters.to_inference_request(req)))
    assert [o.name for o in resp.outputs] == ["label"]
    req = request(tensor("x", "BYTES", [1, 3], [b"2", b"red", b"0"]), outputs=("scores",))
    with pytest.raises(InvalidInput, match=r"unknown requested output\(s\) \['scores'\]"):
        service().infer(converters.to_inference_request(req))


def test_empty_model_name_is_invalid() -> None:
    req = request(tensor("x", "BYTES", [1, 3], [b"2", b"red", b"0"]))
    req.model_name = ""
    with pytest.raises(InvalidInput, match="model_name is empty"):
        service().infer(converters.to_inference_request(req))


# ---- properties -------------------------------------------------------------------------------

NAMES = st.sampled_from(["x1", "color", "x2", "input-0", ""])
DATATYPES = st.sampled_from([*codec.DATATYPES, "FP16", "BOOL", ""])
SHAPES = st.lists(st.integers(-1, 5), max_size=3)
VALUES = {
    "fp32_contents": st.lists(st.floats(width=32), max_size=12),
    "fp64_contents": st.lists(st.floats(), max_size=12),
    "int_contents": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=12),
    "int64_contents": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=12),
    "bool_contents": st.lists(st.booleans(), max_size=12),
    "bytes_contents": st.lists(
        st.one_of(st.binary(max_size=6), st.sampled_from([b"1", b"2.5", b"red", b""])), max_size=12
    ),
}


@st.composite
def arbitrary_requests(draw: st.DrawFn) -> Any:
    inputs = []
    for _ in range(draw(st.integers(0, 4))):
        t = pb.ModelInferRequest.InferInputTensor(
            name=draw(NAMES), datatype=draw(DATATYPES), shape=draw(SHAPES)
        )
        for field in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=2)):
            getattr(t.contents, field).extend(draw(VALUES[field]))
        inputs.append(t)
    raw = draw(st.one_of(st.just([]), st.lists(st.binary(max_size=40), max_size=4)))
    return request(*inputs, raw=raw)


@settings(max_examples=300, deadline=None, database=None)
@given(arbitrary_requests())
def test_arbitrary_requests_raise_nothing_but_invalid_input(req: Any) -> None:
    try:
        result = service().infer(converters.to_inference_request(req))
    except InvalidInput:
        return
    rows = decode(req).shape[0]
    assert result.outputs[0].shape == (rows,)


NUMBERS = st.floats(allow_infinity=False, width=32)
COLORS = st.sampled_from(["red", "blue", "green", "", "unseen"])


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[Any, int]:
    n = draw(st.integers(1, 6))
    x1, x2 = (draw(st.lists(NUMBERS, min_size=n, max_size=n)) for _ in range(2))
    colors = [c.encode() for c in draw(st.lists(COLORS, min_size=n, max_size=n))]
    raw = draw(st.booleans())
    if draw(st.booleans()):  # one BYTES [N, 3] tensor
        cells = [
            v
            for row in zip(x1, colors, x2, strict=True)
            for v in (str(row[0]).encode(), row[1], str(row[2]).encode())
        ]
        t = tensor("input-0", "BYTES", [n, 3], None if raw else cells)
        return request(t, raw=[prefixed(*cells)] if raw else None), n
    numeric = draw(st.sampled_from(["FP32", "FP64"]))
    dtype = codec.DATATYPES[numeric].dtype
    shape = draw(st.sampled_from([[n], [n, 1]]))
    tensors = [
        tensor("x1", numeric, shape, None if raw else x1),
        tensor("color", "BYTES", shape, None if raw else colors),
        tensor("x2", numeric, shape, None if raw else x2),
    ]
    raws = [np.array(x1, dtype).tobytes(), prefixed(*colors), np.array(x2, dtype).tobytes()]
    return request(*tensors, raw=raws if raw else None), n


@settings(max_examples=150, deadline=None, database=None)
@given(valid_requests())
def test_valid_requests_answer_one_label_per_row(case: tuple[Any, int]) -> None:
    req, n = case
    resp = converters.to_infer_response(req, service().infer(converters.to_inference_request(req)))
    assert list(resp.outputs[0].shape) == [n]
    assert list(resp.outputs[1].shape) == [n, 2]
