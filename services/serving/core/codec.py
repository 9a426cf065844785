"""The V2 request codec: request tensors -> the model's rows in its feature order (a float64
matrix for all-numeric models, else columns for a DataFrame). Pure numpy/pandas, no protobuf,
so every rule is unit-testable; answers are encoded by outputs.py.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftloop.shared.artifacts import Feature, ModelSignature
from driftloop.shared.errors import InvalidInput, TooLarge


@dataclass(frozen=True)
class _Datatype:
    field: str
    """The InferTensorContents field that carries this datatype's typed values."""
    dtype: np.dtype | None
    """Little-endian numpy dtype of the raw bytes; None for BYTES."""


DATATYPES: dict[str, _Datatype] = {
    "FP32": _Datatype("fp32_contents", np.dtype("<f4")),
    "FP64": _Datatype("fp64_contents", np.dtype("<f8")),
    "INT32": _Datatype("int_contents", np.dtype("<i4")),
    "INT64": _Datatype("int64_contents", np.dtype("<i8")),
    "BOOL": _Datatype("bool_contents", np.dtype("?")),
    "BYTES": _Datatype("bytes_contents", None),
}


@dataclass(frozen=True)
class InputTensor:
    """One request input. `contents` maps each non-empty *_contents field name to its values."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    contents: Mapping[str, Sequence[Any]]


@dataclass(frozen=True)
class InferenceRequest:
    model: str
    version: str
    id: str
    inputs: tuple[InputTensor, ...]
    raw_input_contents: tuple[bytes, ...] = ()
    outputs: tuple[str, ...] = ()
    """Requested output names; empty means all of OUTPUTS."""


# ---- decoding ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """A request's decoded rows: a float64 [N, F] matrix in the model's feature order when the
    model is all-numeric (either request style), else one array per feature."""

    count: int
    matrix: np.ndarray | None = None
    columns: Mapping[str, np.ndarray] | None = None

    def column(self, j: int, name: str) -> np.ndarray:
        if self.matrix is not None:
            return self.matrix[:, j]
        assert self.columns is not None
        return self.columns[name]


def decode_frame(request: InferenceRequest, signature: ModelSignature) -> pd.DataFrame:
    """The request's rows as a DataFrame whose columns are the model's features, in order."""
    names = pd.Index([f.name for f in signature.features])
    return rows_frame([decode_rows(request, signature)], names)


def rows_frame(parts: Sequence[Rows], names: pd.Index) -> pd.DataFrame:
    """One DataFrame of several requests' rows, in order (a micro-batch, or just one)."""
    matrices = [p.matrix for p in parts if p.matrix is not None]
    if len(matrices) == len(parts):
        matrix = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
        return pd.DataFrame(matrix, columns=names, copy=False)
    return pd.DataFrame(
        {name: np.concatenate([p.column(j, name) for p in parts]) for j, name in enumerate(names)},
        columns=names,
    )


def decode_rows(request: InferenceRequest, signature: ModelSignature) -> Rows:
    """The request's rows (see Rows); raises InvalidInput naming the input and the problem."""
    features = signature.features
    numeric = all(f.kind == "numeric" for f in features)
    if numeric and len(request.inputs) == 1:
        single = request.inputs[0]
        kind = DATATYPES.get(single.datatype)
        fast = (
            single.name not in {f.name for f in features}
            and len(single.shape) == 2
            and single.shape[1] == len(features)
            and kind is not None
            and kind.dtype is not None
        )
        if fast:
            raws = raw_per_input(request)
            values = tensor_values(single, raws[0])
            matrix = values.astype(np.float64).reshape(_rows(single), len(features))
            if np.isinf(matrix).any():
                raise InvalidInput(f"input {single.name!r} has an infinite value")
            return Rows(len(matrix), matrix=matrix)
    stacked = _feature_matrix(request, features) if numeric else None
    if stacked is not None:
        return Rows(len(stacked), matrix=stacked)
    columns, count = decode_columns(request, signature)
    if numeric and columns:
        return Rows(count, matrix=np.column_stack([columns[f.name] for f in features]))
    return Rows(count, columns=columns)


def _feature_matrix(request: InferenceRequest, features: Sequence[Feature]) -> np.ndarray | None:
    """One typed numeric [N] or [N, 1] tensor per feature, straight into a float64 [N, F]
    matrix; None for anything else (decode_columns then decodes it, or says what is wrong)."""
    inputs = request.inputs
    if len(inputs) != len(features) or request.raw_input_contents:
        return None
    at = {f.name: j for j, f in enumerate(features)}
    rows = inputs[0].shape[0] if inputs[0].shape else 0
    if rows <= 0:
        return None
    matrix = np.empty((rows, len(features)), dtype=np.float64)
    filled = set()
    for tensor in inputs:
        j, kind, shape = at.get(tensor.name), DATATYPES.get(tensor.datatype), tensor.shape
        if j is None or j in filled or kind is None or kind.dtype is None:
            return None
        if shape not in ((rows,), (rows, 1)) or len(tensor.contents) != 1:
            return None
        values = tensor.contents.get(kind.field)
        if values is None or len(values) != rows:
            return None
        matrix[:, j] = _numbers(values, kind.dtype)
        filled.add(j)
    return None if np.isinf(matrix).any() else matrix


def decode_columns(
    request: InferenceRequest, signature: ModelSignature
) -> tuple[dict[str, np.ndarray], int]:
    """The request's rows as one column per model feature, in order, and the row count.

    Accepts one [N, F] tensor in feature order, or one [N] / [N, 1] tensor per feature name.
    Numeric features become float64 (NaN allowed, the pipelines impute), categorical ones str.
    """
    inputs = request.inputs
    features = signature.features
    if not inputs:
        raise InvalidInput(
            "request has no inputs: send one [N, F] tensor or one tensor per feature "
            f"({_names(features)})"
        )
    raws = raw_per_input(request)
    feature_names = {f.name for f in features}
    single = inputs[0]
    if len(inputs) == 1 and (
        single.name not in feature_names
        or (len(single.shape) == 2 and len(features) > 1 and single.shape[1] == len(features))
    ):
        columns = _matrix_columns(single, raws[0], features)
    else:
        columns = _feature_columns(inputs, raws, features)
    return columns, len(next(iter(columns.values()))) if columns else 0


def check_rows(request: InferenceRequest, max_rows: int) -> None:
    """Refuse a request whose inputs claim more than `max_rows` rows, before decoding it."""
    for tensor in request.inputs:
        if tensor.shape and tensor.shape[0] > max_rows:
            raise TooLarge(
                f"input {tensor.name!r} has {tensor.shape[0]} rows; this server takes at most "
                f"{max_rows} rows per request: split the request"
            )


def raw_per_input(request: InferenceRequest) -> list[bytes | None]:
    raw = request.raw_input_contents
    if not raw:
        return [None] * len(request.inputs)
    if len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(request.inputs)} inputs: send one entry per input, in order"
        )
    for tensor in request.inputs:
        if any(len(v) for v in tensor.contents.values()):
            raise InvalidInput(
                f"input {tensor.name!r} has typed contents while the request uses "
                "raw_input_contents: use one or the other, not both"
            )
    return list(raw)


def _matrix_columns(
    tensor: InputTensor, raw: bytes | None, features: Sequence[Feature]
) -> dict[str, np.ndarray]:
    width = len(features)
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise InvalidInput(
            f"input {tensor.name!r} has shape {list(tensor.shape)}: a single input must be "
            f"[N, {width}] with the features in order ({_names(features)}), or name the "
            "inputs after the features"
        )
    values = tensor_values(tensor, raw)
    rows = _rows(tensor)
    matrix = values.reshape(rows, width)
    return {f.name: _column(tensor, f, matrix[:, j]) for j, f in enumerate(features)}


def _feature_columns(
    inputs: Sequence[InputTensor], raws: Sequence[bytes | None], features: Sequence[Feature]
) -> dict[str, np.ndarray]:
    by_name = {f.name: f for f in features}
    seen: dict[str, tuple[InputTensor, bytes | None]] = {}
    for tensor, raw in zip(inputs, raws, strict=True):
        if tensor.name not in by_name:
            raise InvalidInput(
                f"unknown input {tensor.name!r}: the model's features are {_names(features)}"
            )
        if tensor.name in seen:
            raise InvalidInput(f"input {tensor.name!r} is given twice")
        seen[tensor.name] = (tensor, raw)
    missing = [f.name for f in features if f.name not in seen]
    if missing:
        raise InvalidInput(f"missing feature input(s) {missing}: every feature needs an input")
    rows: int | None = None
    columns: dict[str, np.ndarray] = {}
    for feature in features:
        tensor, raw = seen[feature.name]
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise InvalidInput(
                f"input {tensor.name!r} has shape {list(tensor.shape)}: a per-feature input "
                "must be [N] or [N, 1]"
            )
        n = _rows(tensor)
        if rows is not None and n != rows:
            raise InvalidInput(
                f"input {tensor.name!r} has {n} rows but earlier inputs have {rows}: "
                "every input needs the same N"
            )
        rows = n
        columns[feature.name] = _column(tensor, feature, tensor_values(tensor, raw))
    return columns


def _rows(tensor: InputTensor) -> int:
    rows = tensor.shape[0]
    if rows == 0:
        raise InvalidInput(f"input {tensor.name!r} has no rows (N == 0)")
    return rows


def tensor_values(tensor: InputTensor, raw: bytes | None) -> np.ndarray:
    """The tensor's elements, flat: a numeric array, or an object array of bytes (BYTES)."""
    kind = DATATYPES.get(tensor.datatype)
    if kind is None:
        raise InvalidInput(
            f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported; "
            f"use one of {sorted(DATATYPES)}"
        )
    if any(d < 0 for d in tensor.shape):
        raise InvalidInput(f"input {tensor.name!r}: shape {list(tensor.shape)} has a negative dim")
    count = math.prod(tensor.shape)
    values = _from_raw(tensor, kind, raw) if raw is not None else _from_typed(tensor, kind)
    if values.size != count:
        raise InvalidInput(
            f"input {tensor.name!r}: shape {list(tensor.shape)} needs {count} elements "
            f"but {values.size} were sent"
        )
    return values


def _from_raw(tensor: InputTensor, kind: _Datatype, raw: bytes) -> np.ndarray:
    if kind.dtype is None:
        return np.array(split_length_prefixed(tensor.name, raw) or [], dtype=object)
    size = kind.dtype.itemsize
    if len(raw) % size:
        raise InvalidInput(
            f"input {tensor.name!r}: raw content is {len(raw)} bytes, not a multiple of "
            f"{size} (the size of one {tensor.datatype} element)"
        )
    return np.frombuffer(raw, dtype=kind.dtype)


def _from_typed(tensor: InputTensor, kind: _Datatype) -> np.ndarray:
    filled = [name for name, values in tensor.contents.items() if len(values)]
    wrong = [name for name in filled if name != kind.field]
    if wrong:
        raise InvalidInput(
            f"input {tensor.name!r} has datatype {tensor.datatype} but sends values in "
            f"{', '.join(sorted(wrong))}; put them in {kind.field}"
        )
    values = tensor.contents.get(kind.field, ())
    if kind.dtype is None:
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out
    return _numbers(values, kind.dtype)


def _numbers(values: Sequence[Any], dtype: np.dtype) -> np.ndarray:
    """Typed contents as a flat array. why two ways: asarray converts protobuf's repeated
    numbers in C (10x faster than a list at 800 values) but has a fixed cost that a short list
    does not."""
    if len(values) <= 16:
        return np.array(list(values), dtype=dtype)
    return np.asarray(values, dtype=dtype).reshape(-1)


def split_length_prefixed(name: str, raw: bytes) -> list[bytes]:
    """Split raw BYTES content: each element is a 4-byte little-endian length, then the bytes."""
    out: list[bytes] = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise InvalidInput(
                f"input {name!r}: raw BYTES content is truncated at byte {pos}: every element "
                "needs a 4-byte little-endian length prefix"
            )
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > end:
            raise InvalidInput(
                f"input {name!r}: raw BYTES element at byte {pos - 4} claims {length} bytes "
                f"but only {end - pos} remain"
            )
        out.append(bytes(raw[pos : pos + length]))
        pos += length
    return out


def _column(tensor: InputTensor, feature: Feature, values: np.ndarray) -> np.ndarray:
    if feature.kind == "categorical":
        if values.dtype != object:
            raise InvalidInput(
                f"input {tensor.name!r} is {tensor.datatype} but feature {feature.name!r} is "
                "categorical: send it as BYTES"
            )
        return np.array(_decode_strings(tensor, feature, values), dtype=object)
    if values.dtype == object:
        numbers = _parse_numbers(tensor, feature, values)
    else:
        numbers = values.astype(np.float64)
    if np.isinf(numbers).any():
        raise InvalidInput(f"input {tensor.name!r}: feature {feature.name!r} has an infinite value")
    return numbers


def _decode_strings(tensor: InputTensor, feature: Feature, values: np.ndarray) -> list[str]:
    try:
        return [bytes(v).decode("utf-8") for v in values]
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"input {tensor.name!r}: feature {feature.name!r} has a value that is not UTF-8"
        ) from exc


def _parse_numbers(tensor: InputTensor, feature: Feature, values: np.ndarray) -> np.ndarray:
    text = np.array(_decode_strings(tensor, feature, values), dtype=str)
    text = np.char.strip(text)
    text[text == ""] = "nan"  # an empty cell is a missing value; the pipeline imputes it
    try:
        return text.astype(np.float64)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(
            f"input {tensor.name!r}: feature {feature.name!r} is numeric but a value is not a "
            f"number ({exc})"
        ) from exc


def _names(features: Sequence[Feature]) -> str:
    return ", ".join(repr(f.name) for f in features)
