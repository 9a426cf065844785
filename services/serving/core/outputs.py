"""The V2 answer: predictions -> the output tensors, as the response carries them (typed values
or raw bytes). A classifier answers `label` and `probabilities`, a regressor `prediction`.
Pure numpy, no protobuf.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from driftloop.shared.artifacts import ModelSignature
from driftloop.shared.errors import InvalidInput

LABEL = "label"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"
OUTPUTS = (LABEL, PROBABILITIES)
"""A classifier's outputs."""
REGRESSION_OUTPUTS = (PREDICTION,)
"""A regressor's output: one number per row."""


@dataclass(frozen=True)
class OutputTensor:
    """One response output; `data` is flat: float64 values, or an object array of bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


def available(signature: ModelSignature) -> tuple[str, ...]:
    """The outputs a model answers with: a regressor's, else a classifier's."""
    return REGRESSION_OUTPUTS if signature.task == "regression" else OUTPUTS


def requested_outputs(
    requested: Sequence[str], offered: tuple[str, ...] = OUTPUTS
) -> tuple[str, ...]:
    """The outputs to answer with: the requested ones (checked against what the model
    `offered`) or all of them."""
    unknown = [name for name in requested if name not in offered]
    if unknown:
        raise InvalidInput(f"unknown requested output(s) {unknown}: available are {list(offered)}")
    return tuple(dict.fromkeys(requested)) or offered


def encode_outputs(
    names: Sequence[str], labels: np.ndarray, probabilities: np.ndarray
) -> list[OutputTensor]:
    """Output tensors: "label" (BYTES [N]) and/or "probabilities" (FP64 [N, C]) of a classifier,
    or "prediction" (FP64 [N]) of a regressor, whose numbers come in `labels`."""
    tensors = []
    for name in names:
        if name == PREDICTION:
            values = np.ascontiguousarray(labels, dtype=np.float64).reshape(-1)
            tensors.append(OutputTensor(PREDICTION, "FP64", (len(values),), values))
        elif name == LABEL:
            values = labels.tolist()
            encoded = {label: str(label).encode("utf-8") for label in set(values)}  # a few classes
            data = np.empty(len(values), dtype=object)
            data[:] = [encoded[label] for label in values]
            tensors.append(OutputTensor(LABEL, "BYTES", (len(labels),), data))
        else:
            proba = np.ascontiguousarray(probabilities, dtype=np.float64)
            tensors.append(OutputTensor(PROBABILITIES, "FP64", proba.shape, proba.reshape(-1)))
    return tensors


def raw_bytes(tensor: OutputTensor) -> bytes:
    """The tensor's raw content: little-endian values, or length-prefixed elements (BYTES)."""
    if tensor.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in tensor.data)
    return tensor.data.astype("<f8", copy=False).tobytes()
