"""Ingestion's Kafka side: publish row batches to driftloop.records.raw, and read the public
JSON topic driftloop.ingest.json (bad or oversized messages raise: the bus dead-letters them)."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import ConsumerRecord
from prometheus_client import Counter

from driftloop.services.ingestion.adapters import pb
from driftloop.services.ingestion.core.batches import (
    DEFAULT_LIMITS,
    JsonMessage,
    Limits,
    RowBatch,
    json_batches,
)
from driftloop.shared.bus import topics
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.metric_labels import BoundedLabel

log = structlog.get_logger(__name__)

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


def json_message(record: ConsumerRecord) -> JsonMessage:
    """A raw (non-envelope) message of a public JSON topic, as the core reads it."""
    return JsonMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp,
        key=record.key,
        value=record.value,
    )


class RawBatchPublisher:
    """Wraps each RowBatch in a RecordBatch envelope and publishes it keyed by dataset."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

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
    """Handles raw (non-envelope) messages of driftloop.ingest.json (see core `json_batches`)."""

    SOURCE = "json-topic"

    def __init__(
        self, publisher: RawBatchPublisher, *, batch_rows: int, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self._publisher = publisher
        self._batch_rows = batch_rows
        self._limits = limits

    async def handle(self, record: ConsumerRecord) -> None:
        await self.handle_records([record])

    async def handle_records(self, records: list[ConsumerRecord]) -> None:
        """One poll's messages: every message is parsed before any is published, so a bad one
        fails the call untouched and the bus retries the messages one by one."""
        batches = json_batches(
            [json_message(r) for r in records], batch_rows=self._batch_rows, limits=self._limits
        )
        await self._publisher.publish(batches, self.SOURCE)
