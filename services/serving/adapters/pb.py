"""Protobuf <-> domain conversion for the V2 inference API (MLServer's grpc/converters.py).

Only shapes data; every rule about what a valid request is lives in codec.py.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.core import codec, outputs
from driftloop.services.serving.core.fleet_router import ANSWERED_BY
from driftloop.services.serving.core.inference import InferenceResult
from driftloop.services.serving.core.slot import LoadedModel

PLATFORM = "sklearn"
CLASSES = "classes"
"""Parameter of the probabilities output: its columns' classes, as a JSON list of strings."""


def to_inference_request(request: pb.ModelInferRequest) -> codec.InferenceRequest:
    inputs = tuple(
        codec.InputTensor(
            name=t.name,
            datatype=t.datatype,
            shape=tuple(t.shape),
            contents={field.name: values for field, values in t.contents.ListFields()},
        )
        for t in request.inputs
    )
    return codec.InferenceRequest(
        model=request.model_name,
        version=request.model_version,
        id=request.id,
        inputs=inputs,
        raw_input_contents=tuple(request.raw_input_contents),
        outputs=tuple(o.name for o in request.outputs),
    )


def to_infer_response(
    request: pb.ModelInferRequest, result: InferenceResult
) -> pb.ModelInferResponse:
    """The response, raw when the request was raw; id and parameters echoed."""
    response = pb.ModelInferResponse(
        model_name=result.model, model_version=result.version, id=request.id
    )
    for key, value in request.parameters.items():
        response.parameters[key].CopyFrom(value)
    if result.answered_by:
        response.parameters[ANSWERED_BY].string_param = answered_by_json(result.answered_by)
    raw = len(request.raw_input_contents) > 0
    for tensor in result.outputs:
        out = response.outputs.add(
            name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape)
        )
        if tensor.name == outputs.PROBABILITIES and result.classes:
            out.parameters[CLASSES].string_param = classes_json(result.classes)
        if raw:
            response.raw_output_contents.append(outputs.raw_bytes(tensor))
        elif tensor.datatype == "BYTES":
            out.contents.bytes_contents.extend(tensor.data.tolist())
        else:
            out.contents.fp64_contents.extend(tensor.data.tolist())
    return response


def answered_by_json(answered_by: Sequence[tuple[str, str]]) -> str:
    """The models that answered a fleet request, as JSON {model: version}, first row first."""
    return json.dumps(dict(answered_by))


@functools.lru_cache(maxsize=256)
def classes_json(classes: tuple[str, ...]) -> str:
    return json.dumps(list(classes))


def to_model_metadata(
    loaded: LoadedModel,
    versions: list[str],
    *,
    name: str = "",
    extra_inputs: Sequence[tuple[str, str]] = (),
) -> pb.ModelMetadataResponse:
    """One FP64 (numeric) or BYTES (categorical) [-1] input per feature, then `extra_inputs`
    ((name, datatype): a fleet's partition columns that are not features); label and
    probabilities (a classifier) or prediction FP64 [-1] (a regressor). `name`: the name asked
    for, when it is not the model's own (a fleet answered by a partition model)."""
    meta = pb.ModelMetadataResponse.TensorMetadata
    inputs = [
        meta(name=f.name, datatype="FP64" if f.kind == "numeric" else "BYTES", shape=[-1])
        for f in loaded.signature.features
    ]
    inputs += [meta(name=column, datatype=kind, shape=[-1]) for column, kind in extra_inputs]
    if loaded.regressor:
        answers = [meta(name=outputs.PREDICTION, datatype="FP64", shape=[-1])]
    else:
        answers = [
            meta(name=outputs.LABEL, datatype="BYTES", shape=[-1]),
            meta(
                name=outputs.PROBABILITIES,
                datatype="FP64",
                shape=[-1, len(loaded.signature.classes)],
            ),
        ]
    return pb.ModelMetadataResponse(
        name=name or loaded.model,
        versions=versions,
        platform=PLATFORM,
        inputs=inputs,
        outputs=answers,
    )
