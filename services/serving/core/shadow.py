"""Shadow scoring: the rows answered by production are scored again by the model's shadow version
off the hot path (bounded queue, background task), and logged under the shadow's version with the
same request ids. A full queue drops (and counts) rows; nothing here can fail or slow a request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import structlog

from driftloop.services.serving.core import metrics
from driftloop.services.serving.core.features import Features, Matrix
from driftloop.services.serving.core.inference import predict
from driftloop.services.serving.core.prediction_log import PredictionLogger, PredictionRecord
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot

log = structlog.get_logger(__name__)

Part = tuple[str, int]


@dataclass(frozen=True)
class _Job:
    shadow: LoadedModel
    frame: Features
    parts: tuple[Part, ...]
    ts: float
    fleet: str = ""
    row_ids: tuple[str, ...] = ()


class ShadowScorer:
    """`offer()` from the request path (never blocks); `run()` is the background scorer."""

    def __init__(
        self,
        slot: ModelSlot,
        logger: PredictionLogger,
        *,
        max_rows: int = 20_000,
        interval_s: float = 0.1,
    ) -> None:
        self._slot = slot
        self._logger = logger
        self._max_rows = max_rows
        self._interval = interval_s
        self._jobs: deque[_Job] = deque()
        self._rows = 0
        self._wake = asyncio.Event()

    @property
    def pending_rows(self) -> int:
        return self._rows

    def active(self, model: str, production_version: str) -> LoadedModel | None:
        """The shadow to score `model`'s rows with, if it has one other than production."""
        shadow = self._slot.shadow(model)
        return shadow if shadow is not None and shadow.version != production_version else None

    def offer(
        self,
        shadow: LoadedModel,
        frame: Features,
        parts: Sequence[Part],
        ts: float,
        *,
        fleet: str = "",
        row_ids: tuple[str, ...] = (),
    ) -> bool:
        """Queue a copy of production's rows for the shadow; False (counted) when full.
        `fleet` and `row_ids` as production's record has them (prediction_log)."""
        rows = len(frame)
        if self._rows + rows > self._max_rows:
            metrics.SHADOW_ROWS_DROPPED.labels(metrics.series(shadow.model), "queue_full").inc(rows)
            return False
        self._jobs.append(_Job(shadow, frame, tuple(parts), ts, fleet, row_ids))
        self._rows += rows
        self._wake.set()
        return True

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass  # poll: offer() may run before this task started waiting
            self._wake.clear()
            await self.drain()

    async def drain(self) -> None:
        """Score every queued job (in a worker thread) and log its predictions."""
        while self._jobs:
            job = self._jobs.popleft()
            self._rows -= len(job.frame)
            try:
                labels = await asyncio.to_thread(_score, job.shadow, job.frame)
            except Exception as exc:  # noqa: BLE001 - a failing shadow never affects serving
                model = metrics.series(job.shadow.model)
                metrics.SHADOW_ROWS_DROPPED.labels(model, "score_failed").inc(len(job.frame))
                log.warning(
                    "shadow_score_failed",
                    model=job.shadow.model,
                    version=job.shadow.version,
                    error=f"{type(exc).__name__}: {exc}",
                )
                continue
            metrics.SHADOW_ROWS.labels(*metrics.model_version(job.shadow)).inc(len(job.frame))
            self._logger.offer(
                PredictionRecord(
                    job.shadow.model,
                    job.shadow.version,
                    job.frame,
                    job.parts[0][0] if len(job.parts) == 1 else "",
                    labels,
                    job.ts,
                    parts=job.parts if len(job.parts) > 1 else (),
                    fleet=job.fleet,
                    row_ids=job.row_ids,
                )
            )


def _score(shadow: LoadedModel, rows: Features) -> np.ndarray:
    if isinstance(rows, Matrix) and rows.names == shadow.feature_names:
        labels, _ = predict(shadow, rows)  # the same features in the same order
        return labels
    frame = rows.frame() if isinstance(rows, Matrix) else rows
    columns = list(shadow.feature_index)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the shadow needs features production does not take: {missing}")
    ordered = frame if list(frame.columns) == columns else frame[columns]
    labels, _ = predict(shadow, ordered)
    return labels
