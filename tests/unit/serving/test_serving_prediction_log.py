"""The prediction logger: batches per model version, request ids per row, bounded, never
failing a request (full queue and failed publishes are dropped and counted)."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from driftloop.services.serving.core import metrics
from driftloop.services.serving.core.features import Matrix
from driftloop.services.serving.core.prediction_log import PredictionLogger, PredictionRecord
from driftloop.shared.records import ipc_to_table

pytestmark = pytest.mark.unit


def record(model: str, version: str, rows: int, request_id: str = "") -> PredictionRecord:
    frame = pd.DataFrame(
        {"x1": np.arange(rows, dtype=float), "color": np.array(["red"] * rows, dtype=object)}
    )
    return PredictionRecord(
        model, version, frame, request_id, np.array(["yes"] * rows, dtype=object), 123.5
    )


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.logs: list[tuple[str, str, int, object]] = []
        self.fail = fail

    async def publish(self, model: str, version: str, ipc: bytes, rows: int) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.logs.append((model, version, rows, ipc_to_table(ipc)))


def dropped(reason: str) -> float:
    return metrics.PREDICTION_LOGS_DROPPED.labels(reason)._value.get()


async def test_flush_sends_one_log_per_model_version_with_row_request_ids() -> None:
    sink = Sink()
    logger = PredictionLogger(sink.publish, new_id=lambda: "gen")
    logger.offer(record("m", "1", 1, "r1"))
    logger.offer(record("m", "2", 2, "r2"))
    logger.offer(record("m", "1", 2))
    await logger.flush()
    assert [(m, v, n) for m, v, n, _ in sink.logs] == [("m", "1", 3), ("m", "2", 2)]
    table = sink.logs[0][3]
    assert table.column_names == ["x1", "color", "_request_id", "_prediction", "_ts"]
    assert table.column("_request_id").to_pylist() == ["r1", "gen:0", "gen:1"]
    assert table.column("_prediction").to_pylist() == ["yes"] * 3
    assert table.column("_ts").to_pylist() == [123.5] * 3
    assert sink.logs[1][3].column("_request_id").to_pylist() == ["r2:0", "r2:1"]
    assert logger.pending_rows == 0


async def test_batches_are_split_at_batch_rows() -> None:
    sink = Sink()
    logger = PredictionLogger(sink.publish, batch_rows=2)
    logger.offer(record("m", "1", 5))
    await logger.flush()
    assert [n for _, _, n, _ in sink.logs] == [2, 2, 1]


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    sink = Sink()
    logger = PredictionLogger(sink.publish, max_rows=3)
    before = dropped("queue_full")
    assert logger.offer(record("m", "1", 2))
    assert not logger.offer(record("m", "1", 2))
    assert dropped("queue_full") == before + 2
    await logger.flush()
    assert [n for _, _, n, _ in sink.logs] == [2]


async def test_failed_publishes_are_counted_and_the_logger_keeps_going() -> None:
    sink = Sink(fail=True)
    logger = PredictionLogger(sink.publish)
    before = dropped("publish_failed")
    logger.offer(record("m", "1", 4))
    await logger.flush()
    assert dropped("publish_failed") == before + 4
    sink.fail = False
    logger.offer(record("m", "1", 1))
    await logger.flush()
    assert [n for _, _, n, _ in sink.logs] == [1]


async def test_run_flushes_at_once_when_a_batch_is_full() -> None:
    sink = Sink()
    logger = PredictionLogger(sink.publish, batch_rows=3, flush_interval_s=60)
    task = asyncio.create_task(logger.run())
    try:
        logger.offer(record("m", "1", 3))
        await asyncio.wait_for(_until(lambda: sink.logs), 5)
        assert sink.logs[0][2] == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(predicate: object) -> None:
    while not predicate():  # type: ignore[operator]
        await asyncio.sleep(0.01)  # poll; bounded by the caller's wait_for


async def test_matrix_rows_log_like_dataframe_rows() -> None:
    """Numeric models hand the logger a Matrix (no pandas on the request path); the log is
    the same table a DataFrame of those rows gives, and mixed records still log together."""
    values = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0]])
    names = ("x1", "x2")
    labels = np.array(["a", "b", "c"], dtype=object)
    tables = []
    for rows in (Matrix(values, names), pd.DataFrame(values, columns=list(names))):
        sink = Sink()
        logger = PredictionLogger(sink.publish, new_id=lambda: "gen")
        logger.offer(PredictionRecord("m", "1", rows, "", labels, 1.0, parts=(("p", 1), ("", 2))))
        await logger.flush()
        tables.append(sink.logs[0][3])
    assert tables[0].equals(tables[1])
    assert tables[0].column("_request_id").to_pylist() == ["p", "gen:0", "gen:1"]
    sink = Sink()
    logger = PredictionLogger(sink.publish)
    logger.offer(PredictionRecord("m", "1", Matrix(values, names), "r", labels, 1.0))
    logger.offer(
        PredictionRecord("m", "1", pd.DataFrame(values, columns=list(names)), "s", labels, 2.0)
    )
    await logger.flush()
    [(_, _, rows, table)] = sink.logs
    assert rows == 6 and table.column("x2").null_count == 2
