"""Adaptive micro-batching: concurrent small requests for the same loaded version are scored in
one predict call, because a scikit-learn pipeline costs about the same for 1 row as for 100.

Adaptive by default: a batch is flushed as soon as the event loop has run the requests that
were ready with it (no timer), so a lone request waits for nothing, while under load the
requests that arrived during one predict call make up the next batch. No grpc imports here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import structlog

from driftloop.services.serving.core import metrics
from driftloop.services.serving.core.codec import Rows, rows_frame
from driftloop.services.serving.core.slot import LoadedModel

log = structlog.get_logger(__name__)

IDLE_TURNS = 16

Part = tuple[str, int]
"""(request id, rows) of one request inside a batch, in order."""
Score = Callable[[LoadedModel, pd.DataFrame, Sequence[Part]], tuple[np.ndarray, np.ndarray]]
"""score(loaded, frame, parts) -> (labels [N], probabilities [N, C]); raises per bad input."""


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 1024
    """Rows per batch at most; requests with more rows than this are scored on their own."""
    max_wait_s: float = 0.0
    """How long the first request of a batch waits for company; 0 = adaptive (see module)."""


@dataclass
class _Item:
    decoded: Rows
    rows: int
    request_id: str
    future: asyncio.Future[tuple[np.ndarray, np.ndarray]]


@dataclass
class _Batch:
    loaded: LoadedModel
    items: list[_Item] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.Handle | None = None


class MicroBatcher:
    """Coalesces concurrent requests per loaded version (so a swap never mixes versions)."""

    def __init__(self, score: Score, policy: BatchPolicy) -> None:
        self._score = score
        self.policy = policy
        self._open: dict[int, _Batch] = {}

    def accepts(self, rows: int) -> bool:
        return self.policy.max_batch_size > 1 and rows < self.policy.max_batch_size

    async def submit(
        self, loaded: LoadedModel, decoded: Rows, request_id: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """This request's (labels, probabilities), scored together with its neighbours."""
        loop = asyncio.get_running_loop()
        key = id(loaded)  # the batch holds `loaded`, so the id cannot be reused meanwhile
        rows = decoded.count
        batch = self._open.get(key)
        if batch is not None and batch.rows + rows > self.policy.max_batch_size:
            self._flush(key)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch(loaded)
            if self.policy.max_wait_s > 0:
                batch.timer = loop.call_later(self.policy.max_wait_s, self._flush, key)
            else:
                batch.timer = loop.call_soon(self._settle, key, 0, 0)
        future: asyncio.Future[tuple[np.ndarray, np.ndarray]] = loop.create_future()
        batch.items.append(_Item(decoded, rows, request_id, future))
        batch.rows += rows
        if batch.rows >= self.policy.max_batch_size:
            self._flush(key)
        return await future

    def _settle(self, key: int, seen: int, idle: int) -> None:
        """Adaptive: flush once the loop ran IDLE_TURNS turns in which no request joined."""
        batch = self._open.get(key)
        if batch is None:
            return
        grown = len(batch.items) > seen
        idle = 0 if grown else idle + 1
        if idle >= IDLE_TURNS:
            self._flush(key)
            return
        batch.timer = asyncio.get_running_loop().call_soon(
            self._settle, key, len(batch.items), idle
        )

    def _flush(self, key: int) -> None:
        batch = self._open.pop(key, None)
        if batch is None:
            return  # already flushed because it filled up
        if batch.timer is not None:
            batch.timer.cancel()
        items = [i for i in batch.items if not i.future.cancelled()]
        if not items:
            return
        metrics.BATCH_ROWS.observe(batch.rows)
        try:
            labels, proba = self._score(batch.loaded, _frame(batch.loaded, items), _parts(items))
        except Exception:  # noqa: BLE001 - one bad request must not fail its neighbours
            self._score_one_by_one(batch.loaded, items)
            return
        start = 0
        for item in items:
            end = start + item.rows
            item.future.set_result((labels[start:end], proba[start:end]))
            start = end

    def _score_one_by_one(self, loaded: LoadedModel, items: list[_Item]) -> None:
        for item in items:
            try:
                result = self._score(loaded, _frame(loaded, [item]), _parts([item]))
            except Exception as exc:  # noqa: BLE001 - handed to that request's caller
                item.future.set_exception(exc)
            else:
                item.future.set_result(result)


def _frame(loaded: LoadedModel, items: Sequence[_Item]) -> pd.DataFrame:
    return rows_frame([item.decoded for item in items], loaded.feature_index)


def _parts(items: Sequence[_Item]) -> list[Part]:
    return [(item.request_id, item.rows) for item in items]
