"""Inference: pick the loaded version, decode the request, predict, encode the answer.

Transport-free (MLServer's DataPlane): the gRPC servicer converts protobuf to these types and back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from driftloop.services.serving.core import codec, limits, metrics
from driftloop.services.serving.core.batching import BatchPolicy, MicroBatcher, Part
from driftloop.services.serving.core.prediction_log import PredictionLogger, PredictionRecord
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared.artifacts import ModelSignature
from driftloop.shared.errors import InvalidInput

if TYPE_CHECKING:
    from driftloop.services.serving.core.shadow import ShadowScorer


@dataclass(frozen=True)
class InferenceResult:
    model: str
    version: str
    """The version that answered."""
    outputs: list[codec.OutputTensor]
    classes: tuple[str, ...] = ()
    """The class of each probabilities column, in order."""


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
    """Answers inference requests from the slot and hands every answered row to the logger.

    Small requests are scored through the micro-batcher when one is configured; the rows of
    each predict call are logged as one record, so logging costs per batch, not per request.
    """

    def __init__(
        self,
        slot: ModelSlot,
        logger: PredictionLogger | None = None,
        clock: Callable[[], float] = time.time,
        *,
        batching: BatchPolicy | None = None,
        max_request_rows: int = 0,
        shadow: ShadowScorer | None = None,
    ) -> None:
        self.slot = slot
        self._logger = logger
        self._shadow = shadow
        self._clock = clock
        self._batcher = MicroBatcher(self._score, batching) if batching else None
        self._max_rows = max_request_rows

    def infer(self, request: codec.InferenceRequest) -> InferenceResult:
        """Score the request on its own (no batching)."""
        loaded, names, rows = self._decode(request)
        frame = codec.rows_frame([rows], loaded.feature_index)
        labels, proba = self._score(loaded, frame, [(request.id, rows.count)])
        return self._result(loaded, names, labels, proba)

    def check_counts(self, model: str, version: str, inputs: int, outputs: int) -> None:
        """Refuse impossible tensor counts before the request is converted (codec's rule)."""
        loaded = self.slot.loaded(model, version) if version else None
        if loaded is None and self.slot.has(model):
            loaded = self.slot.get(model)
        limits.check_input_count(
            model, inputs, outputs, loaded.signature if loaded is not None else None
        )

    async def infer_async(self, request: codec.InferenceRequest) -> InferenceResult:
        """Score the request, together with concurrent small ones when batching is on."""
        if self._batcher is None:
            return self.infer(request)
        loaded, names, rows = self._decode(request)
        if self._batcher.accepts(rows.count):
            labels, proba = await self._batcher.submit(loaded, rows, request.id)
        else:
            frame = codec.rows_frame([rows], loaded.feature_index)
            labels, proba = self._score(loaded, frame, [(request.id, rows.count)])
        return self._result(loaded, names, labels, proba)

    @staticmethod
    def _result(
        loaded: LoadedModel, names: tuple[str, ...], labels: np.ndarray, proba: np.ndarray
    ) -> InferenceResult:
        outputs = codec.encode_outputs(names, labels, proba)
        return InferenceResult(loaded.model, loaded.version, outputs, loaded.signature.classes)

    def _decode(
        self, request: codec.InferenceRequest
    ) -> tuple[LoadedModel, tuple[str, ...], codec.Rows]:
        if not request.model:
            raise InvalidInput("model_name is empty: name the model to ask")
        loaded = self.slot.get(request.model, request.version)
        names = codec.requested_outputs(request.outputs)
        if self._max_rows:
            codec.check_rows(request, self._max_rows)
        return loaded, names, codec.decode_rows(request, loaded.signature)

    def _score(
        self, loaded: LoadedModel, frame: pd.DataFrame, parts: Sequence[Part]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predict `frame` (the rows of `parts`, in order), count it and log it."""
        labels, proba = predict(loaded, frame)
        metrics.INFER_REQUESTS.labels(loaded.model, loaded.version).inc(len(parts))
        metrics.INFER_ROWS.labels(loaded.model, loaded.version).inc(len(frame))
        shadow = self._shadow.active(loaded.model, loaded.version) if self._shadow else None
        if shadow is not None:
            # both logs must carry the same request ids: name the unnamed requests here
            parts = [(rid or uuid.uuid4().hex, rows) for rid, rows in parts]
        ts = self._clock()
        if self._logger is not None:
            self._logger.offer(
                PredictionRecord(
                    loaded.model,
                    loaded.version,
                    frame,
                    parts[0][0] if len(parts) == 1 else "",
                    labels,
                    ts,
                    parts=tuple(parts) if len(parts) > 1 else (),
                )
            )
        if shadow is not None and self._shadow is not None:
            self._shadow.offer(shadow, frame, parts, ts)
        return labels, proba
