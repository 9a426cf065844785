"""Inference: pick the loaded version, decode the request, predict, encode the answer.

Transport-free (MLServer's DataPlane): the gRPC servicer converts protobuf to these types and back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from driftloop.services.serving.core import codec, fleet_router, limits, metrics
from driftloop.services.serving.core.batching import BatchPolicy, MicroBatcher, Part
from driftloop.services.serving.core.features import Features, Matrix, rows_matrix
from driftloop.services.serving.core.fleet_router import FleetRouter, ModelView, RoutedPart
from driftloop.services.serving.core.outputs import (
    OutputTensor,
    available,
    encode_outputs,
    requested_outputs,
)
from driftloop.services.serving.core.prediction_log import (
    PredictionLogger,
    PredictionRecord,
    new_request_id,
)
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
    outputs: list[OutputTensor]
    classes: tuple[str, ...] = ()
    """The class of each probabilities column, in order (none for a regressor)."""
    answered_by: tuple[tuple[str, str], ...] = ()
    """(model, version) of each model that answered a fleet or partition request (see
    fleet_router: `model` is then the addressed name, `version` empty when several answered)."""


def predict(loaded: LoadedModel, features: Features) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a classifier's predicted class (object array of str) and class probabilities
    [N, C], or a regressor's predicted number (float64 [N]) and no probabilities ([N, 0]): a
    Matrix goes straight into the numeric form when the model has one, anything else as a
    DataFrame."""
    try:
        if loaded.regressor:
            numbers = _numbers(loaded, features)
            return numbers, np.empty((len(numbers), 0), dtype=np.float64)
        if isinstance(features, Matrix) and loaded.numeric is not None:
            raw = loaded.numeric.predict_proba(features.values)
        else:
            frame = features.frame() if isinstance(features, Matrix) else features
            raw = loaded.pipeline.predict_proba(frame)
        proba = np.asarray(raw, dtype=np.float64)
    except ValueError as exc:  # sklearn's complaint about the rows it was given
        raise InvalidInput(
            f"model {loaded.model!r} version {loaded.version!r} cannot score these rows: {exc}"
        ) from exc
    return loaded.class_labels[proba.argmax(axis=1)], proba


def _numbers(loaded: LoadedModel, features: Features) -> np.ndarray:
    """A regressor's predictions, float64 [N] (an [N, 1] answer is flattened; deploy refuses
    a model that answers several numbers per row)."""
    if isinstance(features, Matrix) and loaded.numeric is not None:
        raw = loaded.numeric.predict(features.values)
    else:
        frame = features.frame() if isinstance(features, Matrix) else features
        raw = loaded.pipeline.predict(frame)
    numbers = np.asarray(raw, dtype=np.float64)
    return numbers.reshape(-1) if numbers.ndim == 2 and numbers.shape[1] == 1 else numbers


def model_input(loaded: LoadedModel, parts: Sequence[codec.Rows]) -> Features:
    """What `loaded` scores for these requests' rows, in order: a Matrix when it has a numeric
    form (no pandas on the request path), else a DataFrame."""
    if loaded.numeric is not None:
        matrix = rows_matrix(parts, loaded.feature_names)
        if matrix is not None:
            return matrix
    return codec.rows_frame(parts, loaded.feature_index)


def warmup_input(loaded: LoadedModel) -> Features:
    """One row in the form the model will be asked in (see warmup_frame)."""
    frame = warmup_frame(loaded.signature)
    if loaded.numeric is None:
        return frame
    return Matrix(frame.to_numpy(dtype=np.float64), loaded.feature_names)


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
        router: FleetRouter | None = None,
    ) -> None:
        """`router`: route requests to fleets and partition models (without it, every name
        is served from the slot as it is)."""
        self.slot = slot
        self.router = router
        self._logger = logger
        self._shadow = shadow
        self._clock = clock
        self._batcher = MicroBatcher(self._score_rows, batching) if batching else None
        # a partition model's rows of a request to its fleet are logged with fleet=F: they
        # are batched apart from requests addressed to the partition itself
        self._routed = MicroBatcher(self._score_routed, batching) if batching else None
        self._max_rows = max_request_rows

    def infer(self, request: codec.InferenceRequest) -> InferenceResult:
        """Score the request on its own (no batching)."""
        loaded, names, rows = self._decode(request)
        labels, proba = self._score_rows(loaded, [rows], [(request.id, rows.count)])
        return self._result(loaded, names, labels, proba)

    def check_counts(self, model: str, version: str, inputs: int, outputs: int) -> None:
        """Refuse impossible tensor counts before the request is converted (codec's rule)."""
        if self.router is not None and self.router.routes(model):
            # features plus partition columns, which model answers is not known yet
            limits.check_input_count(model, inputs, outputs, None)
            return
        loaded = self.slot.loaded(model, version) if version else None
        if loaded is None and self.slot.has(model):
            loaded = self.slot.get(model)
        limits.check_input_count(
            model, inputs, outputs, loaded.signature if loaded is not None else None
        )

    async def infer_async(self, request: codec.InferenceRequest) -> InferenceResult:
        """Score the request, together with concurrent small ones when batching is on."""
        if self.router is not None and self.router.routes(request.model):
            return await self._infer_routed(self.router, request)
        if self._batcher is None:
            return self.infer(request)
        loaded, names, rows = self._decode(request)
        if self._batcher.accepts(rows.count):
            labels, proba = await self._batcher.submit(loaded, rows, request.id)
        else:
            labels, proba = self._score_rows(loaded, [rows], [(request.id, rows.count)])
        return self._result(loaded, names, labels, proba)

    def ready(self, model: str, version: str) -> bool:
        """ModelReady: whether a request to `model` (at `version`) would find a model."""
        if self.router is not None and self.router.routes(model):
            return self.router.ready(model, version)
        return self.slot.has(model, version)

    async def view(self, model: str, version: str) -> ModelView:
        """ModelMetadata: a model answering `model`, its versions, extra inputs (fleets)."""
        if self.router is not None and self.router.routes(model):
            return await self.router.view(model, version)
        return ModelView(model, self.slot.get(model, version), self.slot.versions(model))

    async def _infer_routed(
        self, router: FleetRouter, request: codec.InferenceRequest
    ) -> InferenceResult:
        """A fleet or partition request: each model scores its rows (fleet_router.plan), the
        answers come back in request order."""
        if self._max_rows:
            codec.check_rows(request, self._max_rows)
        plan = await router.plan(request)
        # a request split among models: each row is logged as `ID:i`, i its place in the request
        base = (request.id or new_request_id()) if len(plan.parts) > 1 else request.id
        answers = [await self._answer(part, base) for part in plan.parts]
        outputs, classes = fleet_router.merge(plan, answers)
        by = fleet_router.answered_by(plan)
        version = by[0][1] if len(by) == 1 else ""
        return InferenceResult(plan.model, version, outputs, classes, answered_by=by)

    async def _answer(self, part: RoutedPart, base: str) -> fleet_router.Answer:
        loaded = part.loaded
        names = requested_outputs(part.request.outputs, available(loaded.signature))
        rows = codec.decode_rows(part.request, loaded.signature)
        batcher = self._routed if part.fleet else self._batcher
        if part.rows is not None:
            ids = tuple(f"{base}:{i}" for i in part.rows.tolist())
            features = model_input(loaded, [rows])
            labels, proba = self._score(
                loaded, features, [(base, rows.count)], fleet=part.fleet, row_ids=ids
            )
        elif batcher is not None and batcher.accepts(rows.count):
            labels, proba = await batcher.submit(loaded, rows, part.request.id)
        else:
            parts = [(part.request.id, rows.count)]
            features = model_input(loaded, [rows])
            labels, proba = self._score(loaded, features, parts, fleet=part.fleet)
        return fleet_router.Answer(names, labels, proba)

    @staticmethod
    def _result(
        loaded: LoadedModel, names: tuple[str, ...], labels: np.ndarray, proba: np.ndarray
    ) -> InferenceResult:
        outputs = encode_outputs(names, labels, proba)
        return InferenceResult(loaded.model, loaded.version, outputs, loaded.signature.classes)

    def _decode(
        self, request: codec.InferenceRequest
    ) -> tuple[LoadedModel, tuple[str, ...], codec.Rows]:
        if not request.model:
            raise InvalidInput("model_name is empty: name the model to ask")
        loaded = self.slot.get(request.model, request.version)
        # the outputs of the version that answers: after a swap from a classifier to a
        # regressor of the same name, production answers `prediction`; a request pinned to the
        # previous version still gets `label` and `probabilities`
        names = requested_outputs(request.outputs, available(loaded.signature))
        if self._max_rows:
            codec.check_rows(request, self._max_rows)
        return loaded, names, codec.decode_rows(request, loaded.signature)

    def _score_rows(
        self, loaded: LoadedModel, rows: Sequence[codec.Rows], parts: Sequence[Part]
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._score(loaded, model_input(loaded, rows), parts)

    def _score_routed(
        self, loaded: LoadedModel, rows: Sequence[codec.Rows], parts: Sequence[Part]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of requests to a fleet that its partition model `loaded` answers."""
        fleet = metrics.series(loaded.model)
        return self._score(loaded, model_input(loaded, rows), parts, fleet=fleet)

    def _score(
        self,
        loaded: LoadedModel,
        features: Features,
        parts: Sequence[Part],
        *,
        fleet: str = "",
        row_ids: tuple[str, ...] = (),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predict `features` (the rows of `parts`, in order), count them and log them
        (`fleet`, `row_ids`: see PredictionRecord)."""
        labels, proba = predict(loaded, features)
        series = metrics.model_version(loaded)
        metrics.INFER_REQUESTS.labels(*series).inc(len(parts))
        metrics.INFER_ROWS.labels(*series).inc(len(features))
        shadow = self._shadow.active(loaded.model, loaded.version) if self._shadow else None
        if shadow is not None:
            # both logs must carry the same request ids: name the unnamed requests here
            parts = [(rid or new_request_id(), rows) for rid, rows in parts]
        ts = self._clock()
        if self._logger is not None:
            self._logger.offer(
                PredictionRecord(
                    loaded.model,
                    loaded.version,
                    features,
                    parts[0][0] if len(parts) == 1 else "",
                    labels,
                    ts,
                    parts=tuple(parts) if len(parts) > 1 else (),
                    fleet=fleet,
                    row_ids=row_ids,
                )
            )
        if shadow is not None and self._shadow is not None:
            self._shadow.offer(shadow, features, parts, ts, fleet=fleet, row_ids=row_ids)
        return labels, proba
