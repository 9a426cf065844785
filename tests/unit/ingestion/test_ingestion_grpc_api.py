"""The ingestion servicer without a port: pb rows become published batches, streams sum up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf import struct_pb2

from driftloop.protos.ingestion.v1 import ingestion_pb2
from driftloop.services.ingestion.adapters.grpc import IngestionServicer
from driftloop.services.ingestion.core.batches import RowBatch
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[RowBatch], str, str]] = []

    async def __call__(self, batches: list[RowBatch], source: str, *, correlation_id: str) -> None:
        self.calls.append((batches, source, correlation_id))


def struct(**values: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


async def test_ingest_publishes_batches_and_reports_them() -> None:
    publish = Recorder()
    servicer = IngestionServicer(publish, batch_rows=2)
    request = ingestion_pb2.IngestRequest(
        dataset="people", rows=[struct(age=i, name=f"n{i}") for i in range(5)]
    )
    response = await servicer.Ingest(request, FakeContext((("x-correlation-id", "c-1"),)))
    [(batches, source, correlation)] = publish.calls
    assert source == "grpc" and correlation == "c-1"
    assert [b.row_count for b in batches] == [2, 2, 1]
    assert response.rows_accepted == 5
    assert list(response.batch_ids) == [b.batch_id for b in batches]
    assert batches[0].table.column("age").to_pylist() == [0.0, 1.0]


async def test_ingest_stream_sums_messages_of_several_datasets() -> None:
    publish = Recorder()
    servicer = IngestionServicer(publish, batch_rows=5000)

    async def requests() -> AsyncIterator[ingestion_pb2.IngestRequest]:
        yield ingestion_pb2.IngestRequest(dataset="a", rows=[struct(x=1), struct(x=2)])
        yield ingestion_pb2.IngestRequest(dataset="b", rows=[struct(y="z")])

    response = await servicer.IngestStream(requests(), FakeContext())
    assert response.rows_accepted == 3
    assert [b.dataset for call in publish.calls for b in call[0]] == ["a", "b"]
    assert len(response.batch_ids) == 2


async def test_ingest_refuses_empty_request_without_publishing() -> None:
    publish = Recorder()
    servicer = IngestionServicer(publish, batch_rows=5000)
    with pytest.raises(InvalidInput, match="no rows"):
        await servicer.Ingest(ingestion_pb2.IngestRequest(dataset="d"), FakeContext())
    assert publish.calls == []


async def test_stream_stops_reading_while_too_many_batches_await_the_broker() -> None:
    import asyncio

    acks: list[asyncio.Future[None]] = []
    read = 0

    async def enqueue(batches: list[RowBatch], source: str, *, correlation_id: str) -> list[Any]:
        futures = [asyncio.get_running_loop().create_future() for _ in batches]
        acks.extend(futures)
        return futures

    servicer = IngestionServicer(Recorder(), batch_rows=5000, enqueue=enqueue, max_in_flight=3)

    async def requests() -> AsyncIterator[ingestion_pb2.IngestRequest]:
        nonlocal read
        for i in range(10):
            read += 1
            yield ingestion_pb2.IngestRequest(
                dataset="d", rows=[struct(x=i)], batch_id=f"client-{i}"
            )

    call = asyncio.create_task(servicer.IngestStream(requests(), FakeContext()))
    for _ in range(20):
        await asyncio.sleep(0)  # poll: deterministic yield (no I/O) until the stream blocks
    assert read == 4 and not call.done(), "backpressure: at most max_in_flight + 1 unacked"
    while not call.done():
        for ack in acks:
            if not ack.done():
                ack.set_result(None)
        await asyncio.sleep(0)  # poll: deterministic yield so the stream reads on
    response = await call
    assert response.rows_accepted == 10 and read == 10
    assert list(response.batch_ids) == [f"client-{i}" for i in range(10)], "client ids reused"


async def test_a_client_batch_id_spanning_several_batches_gets_numbered_ids() -> None:
    publish = Recorder()
    servicer = IngestionServicer(publish, batch_rows=2)
    request = ingestion_pb2.IngestRequest(
        dataset="d", rows=[struct(x=i) for i in range(5)], batch_id="retry-me"
    )
    response = await servicer.Ingest(request, FakeContext())
    assert list(response.batch_ids) == ["retry-me.0", "retry-me.1", "retry-me.2"]
    with pytest.raises(InvalidInput, match="batch_id"):
        await servicer.Ingest(
            ingestion_pb2.IngestRequest(dataset="d", rows=[struct(x=1)], batch_id="../x"),
            FakeContext(),
        )
