"""Ingestion's Kafka side: publish row batches to driftloop.records.raw, and read the public
JSON topic driftloop.ingest.json (bad or oversized messages raise: the bus dead-letters them)."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import ConsumerRecord
from prometheus_client import Counter

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.ingestion.core.batches import (
    DEFAULT_LIMITS,
    Limits,
    RowBatch,
    make_batches,
    message_batch_id,
    parse_json_message,
)
from driftloop.shared.bus import topics
from driftloop.shared.bus.kafka import EventPublisher
from driftloop.shared.records import table_to_ipc

log = structlog.get_logger(__name__)

ROWS_ACCEPTED = Counter(
    "driftloop_ingestion_rows_total",
    "Rows accepted and published for validation",
    ["dataset", "source"],
)
BATCHES_PUBLISHED = Counter(
    "driftloop_ingestion_batches_total",
    "Record batches published to driftloop.records.raw",
    ["dataset", "source"],
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
            payload = events_pb2.RecordBatch(
                dataset=batch.dataset,
                batch_id=batch.batch_id,
                arrow_ipc=table_to_ipc(batch.table),
                row_count=batch.row_count,
                source=source,
            )
            event = self._publisher.event(payload, correlation_id=correlation_id)
            sends.append(await self._publisher.enqueue(topics.RECORDS_RAW, batch.dataset, event))
            ROWS_ACCEPTED.labels(batch.dataset, source).inc(batch.row_count)
            BATCHES_PUBLISHED.labels(batch.dataset, source).inc()
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
    """Handles raw (non-envelope) messages of driftloop.ingest.json.

    Each message becomes its own batch(es) with an id derived from its partition, offset,
    timestamp and checksum, so a message the bus delivers again is curated only once.
    """

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
        batches: list[RowBatch] = []
        for record in records:
            dataset, rows = parse_json_message(record.key, record.value)
            batch_id = message_batch_id(
                record.partition, record.offset, record.timestamp, record.value or b""
            )
            batches.extend(
                make_batches(
                    dataset,
                    rows=rows,
                    batch_rows=self._batch_rows,
                    batch_id=batch_id,
                    limits=self._limits,
                )
            )
        await self._publisher.publish(batches, self.SOURCE)
