"""Ingestion's Kafka side: publish row batches to driftloop.records.raw, and read the public
JSON topic driftloop.ingest.json (bad messages raise, so the consumer dead-letters them)."""

from __future__ import annotations

import structlog
from aiokafka import ConsumerRecord
from prometheus_client import Counter

from driftloop.events.v1 import events_pb2
from driftloop.services.ingestion.core import RowBatch, make_batches, parse_json_message
from driftloop.shared import topics
from driftloop.shared.bus import EventPublisher
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
        for batch in batches:
            payload = events_pb2.RecordBatch(
                dataset=batch.dataset,
                batch_id=batch.batch_id,
                arrow_ipc=table_to_ipc(batch.table),
                row_count=batch.row_count,
                source=source,
            )
            event = self._publisher.event(payload, correlation_id=correlation_id)
            await self._publisher.publish(topics.RECORDS_RAW, batch.dataset, event)
            ROWS_ACCEPTED.labels(batch.dataset, source).inc(batch.row_count)
            BATCHES_PUBLISHED.labels(batch.dataset, source).inc()
            log.info(
                "batch_published",
                dataset=batch.dataset,
                batch_id=batch.batch_id,
                rows=batch.row_count,
                source=source,
                event_id=event.event_id,
            )


class JsonTopicHandler:
    """Handles raw (non-envelope) messages of driftloop.ingest.json."""

    SOURCE = "json-topic"

    def __init__(self, publisher: RawBatchPublisher, *, batch_rows: int) -> None:
        self._publisher = publisher
        self._batch_rows = batch_rows

    async def handle(self, record: ConsumerRecord) -> None:
        dataset, rows = parse_json_message(record.key, record.value)
        batches = make_batches(dataset, rows=rows, batch_rows=self._batch_rows)
        await self._publisher.publish(batches, self.SOURCE)
