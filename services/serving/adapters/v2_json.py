"""JSON <-> domain conversion for V2 inference bodies (the Open Inference Protocol's REST JSON),
as the Kafka path receives them; the protobuf twin is converters.py. No transport code here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftloop.services.serving.core import codec, outputs
from driftloop.services.serving.core.fleet_router import ANSWERED_BY
from driftloop.services.serving.core.inference import InferenceResult
from driftloop.shared.errors import InvalidInput


class Undecodable(ValueError):
    """The bytes are not a V2 request at all (not JSON / not protobuf): nothing to answer."""


@dataclass(frozen=True)
class JsonRequest:
    """A parsed JSON body: the domain request plus what the response echoes."""

    request: codec.InferenceRequest
    parameters: Mapping[str, Any] = field(default_factory=dict)


def load_body(data: bytes) -> dict[str, Any]:
    """The JSON object in `data`; Undecodable when it is not one."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Undecodable(f"not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise Undecodable(f"a V2 JSON request is an object, not {type(body).__name__}")
    return body


def to_inference_request(
    body: Mapping[str, Any], *, model: str, version: str, request_id: str
) -> JsonRequest:
    """The V2 REST request body as a domain request.

    `model`, `version` and `request_id` are what the transport says (headers, key); the body's
    own "model_name" / "model_version" / "id" win when present.
    """
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(
            '"inputs" must be a non-empty list of {"name","shape","datatype","data"}'
        )
    outputs = body.get("outputs") or []
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidInput('"outputs" must be a list of {"name": ...} objects')
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput('"parameters" must be an object')
    request = codec.InferenceRequest(
        model=_text(body, "model_name", model),
        version=_text(body, "model_version", version),
        id=_text(body, "id", request_id),
        inputs=tuple(_input(i, t) for i, t in enumerate(inputs)),
        outputs=tuple(o["name"] for o in outputs),
    )
    return JsonRequest(request, parameters)


def _text(body: Mapping[str, Any], key: str, default: str) -> str:
    value = body.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise InvalidInput(f'"{key}" must be a string, not {type(value).__name__}')
    return value


def _input(index: int, tensor: Any) -> codec.InputTensor:
    if not isinstance(tensor, dict):
        raise InvalidInput(f"inputs[{index}] must be an object with name, shape, datatype, data")
    name = tensor.get("name")
    datatype = tensor.get("datatype")
    shape = tensor.get("shape")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f'inputs[{index}] needs a "name"')
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidInput(f'input {name!r}: "shape" must be a list of integers')
    if not isinstance(datatype, str) or datatype not in codec.DATATYPES:
        raise InvalidInput(
            f"input {name!r}: datatype {datatype!r} is not supported; "
            f"use one of {sorted(codec.DATATYPES)}"
        )
    if "data" not in tensor:
        raise InvalidInput(f'input {name!r} has no "data"')
    kind = codec.DATATYPES[datatype]
    values = _flat(name, datatype, kind.dtype, tensor["data"])
    return codec.InputTensor(name, datatype, tuple(shape), {kind.field: values})


def _flat(name: str, datatype: str, dtype: np.dtype | None, data: Any) -> Any:
    """The tensor's data, flattened (row-major) into what codec expects for `datatype`."""
    try:
        array = np.asarray(data if isinstance(data, list) else [data], dtype=object)
    except ValueError as exc:  # ragged nesting
        raise InvalidInput(f"input {name!r}: data is not a rectangular array: {exc}") from exc
    flat = array.ravel()
    if any(isinstance(v, list) for v in flat):
        raise InvalidInput(f"input {name!r}: data is not a rectangular array (ragged nesting)")
    if dtype is None:  # BYTES: JSON carries strings
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInput(f"input {name!r} is BYTES: send its data as JSON strings")
        return [v.encode("utf-8") for v in flat]
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise InvalidInput(f"input {name!r} is BOOL: send its data as true/false")
        return flat.astype(np.bool_)
    if any(isinstance(v, (str, bool, dict)) for v in flat):
        raise InvalidInput(f"input {name!r} is {datatype}: send its data as JSON numbers")
    if dtype.kind == "f":
        flat = np.where(flat == None, math.nan, flat)  # noqa: E711 - null is a missing value
    elif not all(isinstance(v, int) for v in flat):
        raise InvalidInput(f"input {name!r} is {datatype}: send its data as JSON integers")
    try:
        return flat.astype(dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"input {name!r}: data does not fit {datatype}: {exc}") from exc


def to_response(parsed: JsonRequest, result: InferenceResult) -> dict[str, Any]:
    """The V2 REST response body: outputs with flat data, id and parameters echoed."""
    return {
        "model_name": result.model,
        "model_version": result.version,
        "id": parsed.request.id,
        "parameters": {**parsed.parameters, **_answered_by(result)},
        "outputs": [
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": list(t.shape),
                "data": _data(t),
                **_classes(t, result),
            }
            for t in result.outputs
        ],
    }


def _answered_by(result: InferenceResult) -> dict[str, Any]:
    """The models that answered a fleet or partition request (fleet_router), if any: a JSON
    string as in the protobuf response (V2 parameters are strings, numbers or booleans)."""
    return {ANSWERED_BY: json.dumps(dict(result.answered_by))} if result.answered_by else {}


def _data(tensor: outputs.OutputTensor) -> list[Any]:
    """The tensor's values as JSON: text for BYTES, numbers otherwise (a regressor's
    prediction too); a number that is not finite is null, as JSON has no NaN or Infinity."""
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8") for v in tensor.data]
    values = tensor.data.tolist()
    if np.isfinite(tensor.data).all():
        return values
    return [v if math.isfinite(v) else None for v in values]


def _classes(tensor: outputs.OutputTensor, result: InferenceResult) -> dict[str, Any]:
    if tensor.name != outputs.PROBABILITIES or not result.classes:
        return {}
    return {"parameters": {"classes": list(result.classes)}}


def error_body(request_id: str, model: str, version: str, status: str, error: str) -> bytes:
    """A JSON error response: V2 REST's {"error"} plus the id, model and gRPC status name."""
    body = {
        "id": request_id,
        "model_name": model,
        "model_version": version,
        "error": error,
        "status": status,
    }
    return json.dumps(body).encode("utf-8")


def dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
