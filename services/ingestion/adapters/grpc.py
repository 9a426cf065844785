"""The ingestion gRPC servicer: protobuf rows -> domain batches -> published RecordBatches.

No try/except here: the shared interceptor maps DriftloopError to gRPC status codes.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.services.ingestion.adapters import pb
from driftloop.services.ingestion.core.batches import (
    DEFAULT_LIMITS,
    Ingested,
    Limits,
    RowBatch,
    request_batches,
)
from driftloop.services.ingestion.core.labels import (
    LABELS_PER_BATCH,
    MAX_LABELS_PER_REQUEST,
    request_chunks,
)
from driftloop.shared.errors import NotReady

PublishBatches = Callable[..., Awaitable[None]]
"""`async (batches: list[RowBatch], source: str, *, correlation_id: str) -> None`."""
EnqueueBatches = Callable[..., Awaitable[list[asyncio.Task[None]]]]
"""`async (batches, source, *, correlation_id) -> tasks` that finish once the broker has them."""
PublishLabels = Callable[..., Awaitable[None]]
"""`async (chunks: list[LabelChunk], source: str, *, correlation_id: str) -> None`."""

CORRELATION_HEADER = "x-correlation-id"


class IngestionServicer(ingestion_pb2_grpc.IngestionServiceServicer):
    SOURCE = "grpc"

    def __init__(
        self,
        publish: PublishBatches,
        *,
        batch_rows: int,
        enqueue: EnqueueBatches | None = None,
        max_in_flight: int = 16,
        limits: Limits = DEFAULT_LIMITS,
        publish_labels: PublishLabels | None = None,
        max_labels: int = MAX_LABELS_PER_REQUEST,
    ) -> None:
        self._publish = publish
        self._publish_labels = publish_labels
        self._max_labels = max_labels
        self._enqueue = enqueue
        self._batch_rows = batch_rows
        self._max_in_flight = max_in_flight
        self._limits = limits

    async def Ingest(  # noqa: N802 - generated name
        self, request: ingestion_pb2.IngestRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.IngestResponse:
        batches = self._batches(request)
        await self._publish(batches, self.SOURCE, correlation_id=_correlation_id(context))
        return pb.ingested_to_pb(Ingested.of(batches))

    async def IngestStream(  # noqa: N802 - generated name
        self,
        request_iterator: AsyncIterator[ingestion_pb2.IngestRequest],
        context: grpc.aio.ServicerContext,
    ) -> ingestion_pb2.IngestResponse:
        # Each message is handed to the producer as soon as it is read, with at most
        # `max_in_flight` batches not yet acknowledged by the broker: past that the stream stops
        # reading (gRPC flow control then slows the client), so memory stays bounded. A bad
        # message fails the call; the messages before it stay published.
        correlation_id = _correlation_id(context)
        ingested = Ingested()
        pending: collections.deque[asyncio.Task[None]] = collections.deque()
        try:
            async for request in request_iterator:
                batches = self._batches(request)
                if self._enqueue is None:
                    await self._publish(batches, self.SOURCE, correlation_id=correlation_id)
                else:
                    pending.extend(
                        await self._enqueue(batches, self.SOURCE, correlation_id=correlation_id)
                    )
                    while len(pending) > self._max_in_flight:
                        await pending.popleft()
                ingested.add(batches)
        finally:
            await asyncio.gather(*pending)
        return pb.ingested_to_pb(ingested)

    async def IngestLabels(  # noqa: N802 - generated name
        self, request: ingestion_pb2.IngestLabelsRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.IngestLabelsResponse:
        if self._publish_labels is None:
            raise NotReady("this ingestion server does not publish labels")
        labels = pb.labels_request_from_pb(request, self._max_labels)
        chunks = request_chunks(labels, chunk=LABELS_PER_BATCH, max_labels=self._max_labels)
        await self._publish_labels(chunks, self.SOURCE, correlation_id=_correlation_id(context))
        return pb.labels_response_to_pb(chunks)

    def _batches(self, request: ingestion_pb2.IngestRequest) -> list[RowBatch]:
        rows = pb.rows_request_from_pb(request, self._limits)
        return request_batches(rows, batch_rows=self._batch_rows, limits=self._limits)


def _correlation_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == CORRELATION_HEADER:
            return str(value)
    return ""
