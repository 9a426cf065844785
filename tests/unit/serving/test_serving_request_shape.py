"""Tensor counts are checked before tensors are converted: on the wire (without parsing) for a
large request, against the model's feature count after parsing for any request (#21)."""

from __future__ import annotations

import pytest

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters.pb import check_request_shape
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
    with pytest.raises(InvalidInput, match="1025 input tensors; it takes at most 1024"):
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
