"""Inference: pick the loaded version, decode the request, predict, encode the answer.

Transport-free (MLServer's DataPlane): the gRPC servicer converts protobuf to these types and back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from driftloop.services.serving import codec, metrics
from driftloop.services.serving.prediction_log import PredictionLogger, PredictionRecord
from driftloop.services.serving.slot import LoadedModel, ModelSlot
from driftloop.shared.artifacts import ModelSignature
from driftloop.shared.errors import InvalidInput


@dataclass(frozen=True)
class InferenceResult:
    model: str
    version: str
    """The version that answered."""
    outputs: list[codec.OutputTensor]


def predict(loaded: LoadedModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class per row (object array of str) and class probabilities [N, C]."""
    try:
        proba = np.asarray(loaded.pipeline.predict_proba(frame), dtype=np.float64)
    except ValueError as exc:  # sklearn's complaint about the rows it was given
        raise InvalidInput(
            f"model {loaded.model!r} version {loaded.version!r} cannot score these rows: {exc}"
        ) from exc
    classes = np.asarray(loaded.signature.classes or loaded.pipeline.classes_, dtype=object)
    return classes[proba.argmax(axis=1)].astype(str).astype(object), proba


def warmup_frame(signature: ModelSignature) -> pd.DataFrame:
    """One row for a warm-up prediction: 0.0 for numeric features, "" for categorical ones."""
    return pd.DataFrame(
        {
            f.name: np.array([0.0]) if f.kind == "numeric" else np.array([""], dtype=object)
            for f in signature.features
        },
        columns=[f.name for f in signature.features],
    )


class InferenceService:
    """Answers inference requests from the slot and hands every answered row to the logger."""

    def __init__(
        self,
        slot: ModelSlot,
        logger: PredictionLogger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.slot = slot
        self._logger = logger
        self._clock = clock

    def infer(self, request: codec.InferenceRequest) -> InferenceResult:
        if not request.model:
            raise InvalidInput("model_name is empty: name the model to ask")
        loaded = self.slot.get(request.model, request.version)
        names = codec.requested_outputs(request.outputs)
        frame = codec.decode_frame(request, loaded.signature)
        labels, proba = predict(loaded, frame)
        outputs = codec.encode_outputs(names, labels, proba)
        metrics.INFER_REQUESTS.labels(loaded.model, loaded.version).inc()
        metrics.INFER_ROWS.labels(loaded.model, loaded.version).inc(len(frame))
        if self._logger is not None:
            self._logger.offer(
                PredictionRecord(
                    loaded.model,
                    loaded.version,
                    frame,
                    request.id,
                    labels,
                    self._clock(),
                )
            )
        return InferenceResult(loaded.model, loaded.version, outputs)
