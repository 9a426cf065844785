"""The prediction logger: answered rows go to a bounded in-memory queue, and a flusher sends
them as PredictionLog batches (Arrow IPC) per model version. It never blocks or fails a request:
the request path only appends a reference to rows it already holds; building the Arrow tables
and encoding them happens in a worker thread, publishing on the flusher's own task.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import structlog

from driftloop.services.serving.core import metrics
from driftloop.services.serving.core.features import Features, Matrix
from driftloop.shared.records import table_to_ipc

log = structlog.get_logger(__name__)

REQUEST_ID = "_request_id"
PREDICTION = "_prediction"
TS = "_ts"

_Group = tuple[str, str, str]
"""(model, version, fleet): the rows of one PredictionLog."""


class PublishLog(Protocol):
    """publish(model, version, arrow_ipc, row_count[, fleet=F]): sends one PredictionLog; `fleet`
    is passed only for the rows of a fleet request a partition model answered."""

    def __call__(
        self, model: str, version: str, arrow_ipc: bytes, row_count: int, fleet: str = ""
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class PredictionRecord:
    """The rows of one answered request."""

    model: str
    version: str
    frame: Features
    """The rows' features: a DataFrame, or a Matrix (numeric models)."""
    request_id: str
    labels: np.ndarray
    """Per row, the predicted class (object array of str) or a regressor's number (float64)."""
    ts: float
    parts: tuple[tuple[str, int], ...] = ()
    """When the frame holds several requests (a micro-batch): (request id, rows) of each, in
    order; `request_id` is then unused."""
    fleet: str = ""
    """The fleet a request was addressed to when one of its partition models answered these
    rows (PredictionLog.fleet); empty otherwise."""
    row_ids: tuple[str, ...] = ()
    """Each row's request id, when the rows are some of a fleet request's rows (`REQ:i`, i the
    row's place in the request); overrides `request_id` and `parts`."""


class PredictionLogger:
    """Bounded by rows: when `max_rows` are waiting, new rows are dropped and counted."""

    def __init__(
        self,
        publish: PublishLog,
        *,
        max_rows: int = 50_000,
        batch_rows: int = 1_000,
        flush_interval_s: float = 0.1,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self._publish = publish
        self._max_rows = max_rows
        self._batch_rows = batch_rows
        self._interval = flush_interval_s
        self._new_id = new_id or new_request_id
        self._pending: deque[PredictionRecord] = deque()
        self._rows = 0
        self._wake = asyncio.Event()

    @property
    def pending_rows(self) -> int:
        return self._rows

    def offer(self, record: PredictionRecord) -> bool:
        """Queue a request's rows without waiting; False (and counted) when the queue is full."""
        rows = len(record.frame)
        if self._rows + rows > self._max_rows:
            metrics.PREDICTION_LOGS_DROPPED.labels("queue_full").inc(rows)
            return False
        self._pending.append(record)
        self._rows += rows
        if self._rows >= self._batch_rows:
            self._wake.set()
        return True

    async def run(self) -> None:
        """Flush every flush_interval_s, or at once when a batch's worth of rows waits."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass  # the interval passed: flush what is there
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send everything queued now; a failed publish drops (and counts) its rows."""
        records = list(self._pending)
        self._pending.clear()
        self._rows = 0
        if not records:
            return
        groups: dict[_Group, list[PredictionRecord]] = {}
        for record in records:
            groups.setdefault((record.model, record.version, record.fleet), []).append(record)
        # why a thread: building and encoding thousands of rows would hold the event loop (and
        # every request waiting on it); Arrow does most of it without the GIL
        encoded = await asyncio.to_thread(self._encode_all, groups)
        for (model, version, fleet), chunks in encoded.items():
            for ipc, rows in chunks:
                await self._send(model, version, ipc, rows, fleet)

    def _encode_all(
        self, groups: dict[_Group, list[PredictionRecord]]
    ) -> dict[_Group, list[tuple[bytes, int]]]:
        out: dict[_Group, list[tuple[bytes, int]]] = {}
        for key, group in groups.items():
            table = self._table(group)
            out[key] = [
                (table_to_ipc(chunk), chunk.num_rows)
                for chunk in (
                    table.slice(start, self._batch_rows)
                    for start in range(0, table.num_rows, self._batch_rows)
                )
            ]
        return out

    async def _send(self, model: str, version: str, ipc: bytes, rows: int, fleet: str) -> None:
        try:
            # why only when set: a publisher that predates fleets takes four arguments
            await self._publish(model, version, ipc, rows, **({"fleet": fleet} if fleet else {}))
        except Exception as exc:  # noqa: BLE001 - logging must never take serving down
            metrics.PREDICTION_LOGS_DROPPED.labels("publish_failed").inc(rows)
            log.warning(
                "prediction_log_dropped",
                model=model,
                version=version,
                fleet=fleet,
                rows=rows,
                error=str(exc),
                error_type=type(exc).__name__,
            )

    def _table(self, group: list[PredictionRecord]) -> pa.Table:
        table = _features_table([r.frame for r in group])
        ids: list[str] = []
        for record in group:
            ids.extend(self._request_ids(record))
        ts = np.concatenate([np.full(len(r.frame), r.ts, dtype=np.float64) for r in group])
        table = table.append_column(REQUEST_ID, pa.array(ids, type=pa.string()))
        table = table.append_column(PREDICTION, _predictions([r.labels for r in group]))
        return table.append_column(TS, pa.array(ts, type=pa.float64()))

    def _request_ids(self, record: PredictionRecord) -> list[str]:
        if record.row_ids:
            return list(record.row_ids)
        parts = record.parts or ((record.request_id, len(record.frame)),)
        ids: list[str] = []
        for request_id, rows in parts:
            base = request_id or self._new_id()
            ids.extend([base] if rows == 1 else [base + s for s in _row_suffixes(rows)])
        return ids


_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """A unique id for a request that came without one: this process's random prefix and a
    counter (a tenth of uuid4's cost, and the log names thousands of requests a second)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _features_table(parts: list[Features]) -> pa.Table:
    """One Arrow table of the rows of several records: straight from the matrices when every
    part is one (with the same columns), through pandas otherwise."""
    first = parts[0]
    if isinstance(first, Matrix) and all(
        isinstance(p, Matrix) and p.names == first.names for p in parts
    ):
        values = np.concatenate([p.values for p in parts if isinstance(p, Matrix)])
        columns = np.ascontiguousarray(values.T)
        # from_pandas: NaN (a missing value) is logged as null, as from a DataFrame
        return pa.Table.from_arrays(
            [pa.array(c, from_pandas=bool(np.isnan(c).any())) for c in columns],
            names=list(first.names),
        )
    frames = [p.frame() if isinstance(p, Matrix) else p for p in parts]
    frame = pd.concat(frames, ignore_index=True)
    return pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)


def _predictions(parts: list[np.ndarray]) -> pa.Array:
    """The `_prediction` column: float64 when every part holds a regressor's numbers, else the
    classes as strings. (A version is one pipeline, so the parts of a group agree; were a
    version's artifact replaced by one of the other task, its numbers are logged as text.)"""
    arrays = [np.asarray(p) for p in parts]
    if all(a.dtype.kind == "f" for a in arrays):
        return pa.array(np.concatenate(arrays).astype(np.float64, copy=False), type=pa.float64())
    texts = [np.asarray(a if a.dtype == object else a.astype(str), dtype=object) for a in arrays]
    return pa.array(np.concatenate(texts), type=pa.string())


def _row_suffixes(rows: int) -> tuple[str, ...]:
    """(":0", ":1", ...) for `rows` rows: the ids of a multi-row request's rows."""
    return _kept_suffixes(rows) if rows <= 4096 else tuple(f":{i}" for i in range(rows))


@functools.lru_cache(maxsize=32)
def _kept_suffixes(rows: int) -> tuple[str, ...]:
    return tuple(f":{i}" for i in range(rows))
