"""A fleet request's rows taken apart: each row's value of a partition column, and the
sub-request holding some rows for one model (typed values, inputs it does not take dropped).
Pure numpy on codec's domain types, no protobuf.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

import numpy as np

from driftloop.services.serving.core import codec
from driftloop.shared.errors import InvalidInput


def column_values(
    request: codec.InferenceRequest, column: str, features: Sequence[str] | None
) -> np.ndarray:
    """Each row's value of partition column `column`, as an [N] array (numbers, or bytes for
    BYTES): from the input named `column`, else from the request's single [N, F] tensor when
    `features` (the model's feature order) holds `column`. InvalidInput naming the column when
    the request has neither."""
    raws = codec.raw_per_input(request)
    for tensor, raw in zip(request.inputs, raws, strict=True):
        if tensor.name == column:
            if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
                raise InvalidInput(
                    f"input {column!r} (a partition column) has shape {list(tensor.shape)}: "
                    "send it as [N] or [N, 1], one value per row"
                )
            return _by_row(tensor, raw)[:, 0]
    tensors = [(t, r) for t, r in zip(request.inputs, raws, strict=True) if len(t.shape) == 2]
    wide = [(t, r) for t, r in tensors if t.shape[1] > 1]
    if features is not None and column in features and len(wide) == 1:
        tensor, raw = wide[0]
        if tensor.shape[1] == len(features):
            return _by_row(tensor, raw)[:, list(features).index(column)]
    raise InvalidInput(
        f"partition column {column!r} is missing from the request to fleet "
        f"{request.model.split('/', 1)[0]!r}: send it as an input named {column!r} with one "
        "value per row (or in the [N, F] tensor, when the model takes it as a feature)"
    )


def take_rows(
    request: codec.InferenceRequest,
    rows: np.ndarray | None,
    drop: Collection[str] = (),
    *,
    total: int = 0,
) -> codec.InferenceRequest:
    """The request with only `rows` (their places in it, in the order given; None: every row)
    and without the inputs named in `drop` (partition columns the answering model does not
    take). `total`: the request's row count, which every input must have."""
    raws = codec.raw_per_input(request)
    kept = [(t, r) for t, r in zip(request.inputs, raws, strict=True) if t.name not in drop]
    if rows is None:
        return replace(
            request,
            inputs=tuple(t for t, _ in kept),
            raw_input_contents=tuple(r for _, r in kept if r is not None),
        )
    inputs = []
    for tensor, raw in kept:
        values = _by_row(tensor, raw)
        if len(values) != total:
            raise InvalidInput(
                f"input {tensor.name!r} has {len(values)} rows but the partition column has "
                f"{total}: every input needs the same N"
            )
        field = codec.DATATYPES[tensor.datatype].field
        shape = (len(rows), *tensor.shape[1:])
        picked = values[rows].reshape(-1)  # typed contents are flat, row-major
        inputs.append(codec.InputTensor(tensor.name, tensor.datatype, shape, {field: picked}))
    return replace(request, inputs=tuple(inputs), raw_input_contents=())


def _by_row(tensor: codec.InputTensor, raw: bytes | None) -> np.ndarray:
    """The tensor's elements as [N, width] (codec checks datatype and element count)."""
    if not tensor.shape:
        raise InvalidInput(f"input {tensor.name!r} has no shape: send [N] or [N, F]")
    values = codec.tensor_values(tensor, raw)
    rows = tensor.shape[0]
    if rows <= 0:
        raise InvalidInput(f"input {tensor.name!r} has no rows (N == 0)")
    return values.reshape(rows, -1)
