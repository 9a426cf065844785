"""Ingestion's Kafka side for labels: publish LabelBatch events to driftloop.labels keyed by
model, and read the public JSON topic driftloop.labels.json (bad messages raise: the bus
dead-letters them with the reason)."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import ConsumerRecord
from prometheus_client import Counter

from driftloop.services.ingestion.adapters import pb
from driftloop.services.ingestion.adapters.kafka import json_message
from driftloop.services.ingestion.core.labels import LabelChunk, json_label_chunks
from driftloop.shared.bus import topics
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.metric_labels import BoundedLabel

log = structlog.get_logger(__name__)

MODEL_LABEL = BoundedLabel("model")
LABELS_PUBLISHED = Counter(
    "driftloop_ingestion_labels_total",
    "Labels published to driftloop.labels",
    ["model", "source"],
)


class LabelPublisher:
    """Wraps each LabelChunk in a LabelBatch envelope whose event id is derived from the chunk's
    batch id, and publishes it keyed by model."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    async def publish(
        self, chunks: list[LabelChunk], source: str, *, correlation_id: str = ""
    ) -> None:
        """Publish and wait until the broker has every chunk."""
        sends = []
        for chunk in chunks:
            event = self._publisher.event(
                pb.label_batch_to_pb(chunk), correlation_id=correlation_id
            )
            # why: a retried request or re-delivered message must be the same event, so a
            # consumer's seen-id check drops it (envelope ids are otherwise fresh uuid4s)
            if event.correlation_id == event.event_id:
                event.correlation_id = chunk.event_id
            event.event_id = chunk.event_id
            sends.append(await self._publisher.enqueue(topics.LABELS, chunk.model, event))
            LABELS_PUBLISHED.labels(MODEL_LABEL(chunk.model), source).inc(len(chunk.labels))
            log.debug(
                "labels_published",
                model=chunk.model,
                batch_id=chunk.batch_id,
                labels=len(chunk.labels),
                source=source,
                event_id=event.event_id,
            )
        await asyncio.gather(*sends)


class JsonLabelsHandler:
    """Handles raw messages of driftloop.labels.json (an `on_batch` handler): every message of a
    poll is parsed before anything is published, so a bad one fails the call untouched and the
    bus retries the messages one by one, dead-lettering the bad one with its reason."""

    SOURCE = "json-topic"

    def __init__(self, publisher: LabelPublisher, *, chunk: int) -> None:
        self._publisher = publisher
        self._chunk = chunk

    async def handle_records(self, records: list[ConsumerRecord]) -> None:
        chunks = json_label_chunks([json_message(r) for r in records], chunk=self._chunk)
        await self._publisher.publish(chunks, self.SOURCE)
