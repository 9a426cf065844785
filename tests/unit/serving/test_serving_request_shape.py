"""Tensor counts are checked before tensors are converted: on the wire (without parsing) for a
large request, against the model's feature count after parsing for any request (#21)."""

from __future__ import annotations

import pytest

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters.wire_scan import check_request_shape, scan
from driftloop.services.serving.core import limits
from driftloop.shared.artifacts import Feature, ModelSignature
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit


def request(inputs: int, raw: int = 0) -> bytes:
    req = pb.ModelInferRequest(model_name="m")
    for i in range(inputs):
        req.inputs.add(name=f"x{i}", datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
    req.raw_input_contents.extend([b"\x00\x00\x80\x3f"] * raw)
    return req.SerializeToString()


def test_the_wire_count_refuses_more_tensors_than_any_model_takes() -> None:
    check_request_shape(request(1024))
    with pytest.raises(InvalidInput, match="more than 1024 input tensors; it takes at most 1024"):
        check_request_shape(request(1025))
    with pytest.raises(InvalidInput, match="3 raw_input_contents for 2 inputs"):
        check_request_shape(request(2, raw=3))


def test_a_loaded_model_takes_one_tensor_per_feature_at_most() -> None:
    signature = ModelSignature(
        features=(Feature("a", "numeric"), Feature("b", "numeric")), classes=("no", "yes")
    )
    limits.check_input_count("m", 2, 1, signature)
    with pytest.raises(InvalidInput, match=r"3 input tensors; it takes at most 2 \(one per"):
        limits.check_input_count("m", 3, 1, signature)
    with pytest.raises(InvalidInput, match="asks for 9 outputs"):
        limits.check_input_count("m", 1, 9, signature)


def test_the_wire_count_stops_at_the_first_tensor_past_the_limit() -> None:
    one = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1])
    tensor = one.SerializeToString()
    field = b"\x2a" + bytes([len(tensor)]) + tensor
    huge = pb.ModelInferRequest(model_name="m").SerializeToString() + field * 200_000
    counts = scan(huge)
    assert (counts.model_name, counts.inputs) == ("m", limits.MAX_INPUTS_UNKNOWN_MODEL + 1)
    with pytest.raises(InvalidInput, match="'m' has more than 1024 input tensors"):
        check_request_shape(huge)


def test_the_wire_count_reads_every_field_kind_and_refuses_malformed_bytes() -> None:
    req = pb.ModelInferRequest(model_name="m", model_version="2", id="r")
    req.parameters["content_type"].string_param = "pd"
    req.parameters["n"].int64_param = 300
    req.outputs.add(name="label")
    tensor = req.inputs.add(name="x", datatype="FP64", shape=[2, 3])
    tensor.contents.fp64_contents.extend([1.5] * 6)
    counts = scan(req.SerializeToString())
    assert (counts.model_name, counts.inputs, counts.outputs, counts.parameters) == ("m", 1, 1, 2)
    check_request_shape(req.SerializeToString())
    for bad in (b"\x2a\x05ab", b"\x2a", b"\x0b", b"\x80" * 11):
        with pytest.raises(InvalidInput, match="malformed"):
            check_request_shape(bad)
    many = pb.ModelInferRequest(model_name="m")
    for i in range(300):
        many.parameters[f"p{i}"].bool_param = True
    with pytest.raises(InvalidInput, match="more than 256 parameters"):
        check_request_shape(many.SerializeToString())
    with pytest.raises(InvalidInput, match="more than 256 parameters"):
        limits.check_parameter_count("m", 257)
    limits.check_parameter_count("m", 256)
