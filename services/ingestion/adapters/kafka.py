"""Ingestion's Kafka side: publish row batches to driftloop.records.raw, and read the public
JSON topic driftloop.ingest.json, coalescing its messages across polls into batches per dataset
(adapters/json_windows.py; bad or oversized messages are dead-lettered with the reason)."""

from __future__ import annotations

import asyncio
import time

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import Counter

from driftloop.services.ingestion.adapters import pb
from driftloop.services.ingestion.adapters.json_windows import (
    Behind,
    Mark,
    Recall,
    WindowedJsonHandler,
)
from driftloop.services.ingestion.core.batches import (
    DEFAULT_LIMITS,
    Limits,
    RowBatch,
)
from driftloop.services.ingestion.core.json_rows import Row, bundle_batches, row_pieces
from driftloop.services.ingestion.core.windows import (
    DEFAULT_LINGER_S,
    DEFAULT_WINDOW_OFFSETS,
    Bundle,
    Refused,
    WindowPolicy,
)
from driftloop.shared.bus import topics
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.metric_labels import BoundedLabel

log = structlog.get_logger(__name__)

JSON_GROUP = "ingestion-json"

ROWS_ACCEPTED = Counter(
    "driftloop_ingestion_rows_total",
    "Rows accepted and published for validation",
    ["dataset", "source"],
)
DATASET_LABEL = BoundedLabel("dataset")
BATCHES_PUBLISHED = Counter(
    "driftloop_ingestion_batches_total",
    "Record batches published to driftloop.records.raw",
    ["dataset", "source"],
)


class RawBatchPublisher:
    """Wraps each RowBatch in a RecordBatch envelope and publishes it keyed by dataset."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    @property
    def publisher(self) -> EventPublisher:
        return self._publisher

    async def publish(
        self, batches: list[RowBatch], source: str, *, correlation_id: str = ""
    ) -> None:
        """Publish and wait until the broker has every batch."""
        await asyncio.gather(*await self.enqueue(batches, source, correlation_id=correlation_id))

    async def enqueue(
        self, batches: list[RowBatch], source: str, *, correlation_id: str = ""
    ) -> list[asyncio.Task[None]]:
        """Hand the batches to the producer; the tasks finish when the broker has them."""
        sends = []
        for batch in batches:
            payload = pb.record_batch_to_pb(batch, source)
            event = self._publisher.event(payload, correlation_id=correlation_id)
            sends.append(await self._publisher.enqueue(topics.RECORDS_RAW, batch.dataset, event))
            dataset = DATASET_LABEL(batch.dataset)
            ROWS_ACCEPTED.labels(dataset, source).inc(batch.row_count)
            BATCHES_PUBLISHED.labels(dataset, source).inc()
            log.debug(
                "batch_published",
                dataset=batch.dataset,
                batch_id=batch.batch_id,
                rows=batch.row_count,
                source=source,
                event_id=event.event_id,
            )
        return sends


class JsonTopicHandler:
    """The `on_batch` handler of driftloop.ingest.json (give `drain` as the consumer's
    `on_drain`, its `behind` to `follow`, and see `remember_cuts`): rows are coalesced per dataset
    across messages and polls, cut by offset windows, row limits and the linger
    (core/windows.py), and published as RowBatches."""

    SOURCE = "json-topic"

    def __init__(
        self,
        publisher: RawBatchPublisher,
        *,
        batch_rows: int,
        limits: Limits = DEFAULT_LIMITS,
        window_offsets: int = DEFAULT_WINDOW_OFFSETS,
        linger_s: float = DEFAULT_LINGER_S,
        group: str = JSON_GROUP,
    ) -> None:
        self._publisher = publisher
        self._batch_rows = batch_rows
        self._limits = limits
        policy = WindowPolicy(
            window_offsets=window_offsets,
            max_rows=batch_rows,
            max_columns=limits.max_columns,
            linger_s=linger_s,
        )
        self._windows = WindowedJsonHandler(
            policy,
            lambda message: row_pieces(message, limits),
            self._publish,
            dead_letters=publisher.publisher,
            group=group,
        )

    async def handle_records(self, records: list[ConsumerRecord]) -> asyncio.Future[int]:
        """One poll's messages; the future completes when they are published (see
        WindowedJsonHandler)."""
        return await self._windows.handle_records(records)

    async def drain(self, stopping: bool = False) -> None:
        """Let go of every held row (see WindowedJsonHandler.drain)."""
        await self._windows.drain(stopping)

    def follow(self, behind: Behind) -> None:
        """Linger only where the consumer is not behind (see WindowedJsonHandler.follow)."""
        self._windows.follow(behind)

    def remember_cuts(self, mark: Mark, recall: Recall) -> None:
        """Record time-dependent cuts in the commit metadata (see
        WindowedJsonHandler.remember_cuts)."""
        self._windows.remember_cuts(mark, recall)

    def commit_metadata(self, tp: TopicPartition, offset: int) -> str:
        """The consumer's `commit_metadata` (see WindowedJsonHandler.commit_metadata)."""
        return self._windows.commit_metadata(tp, offset)

    async def _publish(self, bundle: Bundle[Row]) -> tuple[list[asyncio.Task[None]], list[Refused]]:
        made = bundle_batches(
            bundle, now=time.time(), batch_rows=self._batch_rows, limits=self._limits
        )
        return await self._publisher.enqueue(made.batches, self.SOURCE), made.refused
