"""Counting a large ModelInferRequest's tensors on the wire, stopping at the first count past a
limit: a request of 700,000 tiny tensors is refused after reading ~1,000 field headers, with no
parse and no allocation per tensor (a shape-only parse still made one bytes object each).
"""

from __future__ import annotations

from dataclasses import dataclass

from driftloop.services.serving.core import limits
from driftloop.shared.errors import InvalidInput
from driftloop.shared.names import shown

# field numbers of inference.ModelInferRequest (grpc_predict_v2.proto)
MODEL_NAME, PARAMETERS, INPUTS, OUTPUTS, RAW_INPUT_CONTENTS = 1, 4, 5, 6, 7


@dataclass
class WireCounts:
    model_name: str = ""
    inputs: int = 0
    outputs: int = 0
    raw_input_contents: int = 0
    parameters: int = 0


def check_request_shape(data: bytes) -> None:
    """Refuse a request whose tensor, output or parameter counts no model takes, reading only
    field headers (see the module docstring); the per-model limit comes after the parse."""
    counts = scan(data)
    most = limits.MAX_INPUTS_UNKNOWN_MODEL
    if counts.inputs > most or counts.raw_input_contents > most:
        raise InvalidInput(
            f"request for {shown(counts.model_name)} has more than {most} input tensors; "
            f"it takes at most {most}"
        )
    limits.check_input_count(counts.model_name, counts.inputs, counts.outputs, None)
    limits.check_parameter_count(counts.model_name, counts.parameters)
    if counts.raw_input_contents > counts.inputs:
        raise InvalidInput(
            f"request has {counts.raw_input_contents} raw_input_contents for "
            f"{counts.inputs} inputs; send one per input"
        )


def scan(data: bytes) -> WireCounts:
    """Counts of the top-level fields that repeat; stops as soon as one passes its limit (the
    count is then limit + 1, enough to refuse)."""
    counts = WireCounts()
    view = memoryview(data)
    pos, end = 0, len(data)
    max_inputs = limits.MAX_INPUTS_UNKNOWN_MODEL
    while pos < end:
        key, pos = _varint(view, pos, end)
        field, kind = key >> 3, key & 7
        if kind == 2:
            length, pos = _varint(view, pos, end)
            if pos + length > end:
                raise _malformed()
            if field == MODEL_NAME:
                counts.model_name = bytes(view[pos : pos + length]).decode("utf-8", "replace")
            pos += length
        elif kind == 0:
            _, pos = _varint(view, pos, end)
        elif kind in (1, 5):
            pos += 8 if kind == 1 else 4
        else:
            raise _malformed()
        if field == INPUTS:
            counts.inputs += 1
        elif field == OUTPUTS:
            counts.outputs += 1
        elif field == RAW_INPUT_CONTENTS:
            counts.raw_input_contents += 1
        elif field == PARAMETERS:
            counts.parameters += 1
        if (
            counts.inputs > max_inputs
            or counts.outputs > limits.MAX_OUTPUTS
            or counts.raw_input_contents > max_inputs
            or counts.parameters > limits.MAX_PARAMETERS
        ):
            break
    if pos > end:
        raise _malformed()
    return counts


def _varint(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 64:
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise _malformed()


def _malformed() -> InvalidInput:
    return InvalidInput("request is not a valid ModelInferRequest (malformed protobuf)")
