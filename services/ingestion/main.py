"""Entry point of the ingestion service: wiring only.

Run with `python -m driftloop.services.ingestion`.
"""

from __future__ import annotations

import asyncio

from driftloop.protos.ingestion.v1 import ingestion_pb2_grpc
from driftloop.services.ingestion.adapters.grpc import IngestionServicer
from driftloop.services.ingestion.adapters.kafka import (
    JSON_GROUP,
    JsonTopicHandler,
    RawBatchPublisher,
)
from driftloop.services.ingestion.adapters.kafka_labels import (
    LABELS_JSON_GROUP,
    JsonLabelsHandler,
    LabelPublisher,
)
from driftloop.services.ingestion.core.labels import LABELS_PER_BATCH
from driftloop.services.ingestion.settings import IngestionSettings
from driftloop.shared import runtime
from driftloop.shared.allocator import keep_freed_buffers
from driftloop.shared.auth import INGEST
from driftloop.shared.bus import topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.grpc.server import ServiceBinding
from driftloop.shared.logging import configure
from driftloop.shared.settings import CommonSettings

RECORD_BATCH_BUFFER = 4 * 1024 * 1024
SERVICE = "driftloop.ingestion.v1.IngestionService"
JSON_POLLS_IN_FLIGHT = 256
"""Polls of a JSON topic held or awaiting acks before the consumer drains its windows: room
for a window's worth of small polls (each future completes only when its rows are cut)."""


def main() -> None:
    common = CommonSettings()
    settings = IngestionSettings()
    configure("ingestion", json=common.log_json, level=common.log_level)
    keep_freed_buffers()
    asyncio.run(run(common, settings))


async def run(common: CommonSettings, settings: IngestionSettings) -> None:
    """Build the parts inside the event loop (aiokafka's clients need a running loop)."""
    # why: record batches are large; a bigger per-partition buffer lets several travel per
    # produce request instead of one round trip each
    publisher = EventPublisher(
        common.kafka_connection(), "ingestion", max_batch_bytes=RECORD_BATCH_BUFFER
    )
    raw = RawBatchPublisher(publisher)
    labels = LabelPublisher(publisher)
    servicer = IngestionServicer(
        raw.publish,
        batch_rows=settings.batch_rows,
        enqueue=raw.enqueue,
        max_in_flight=settings.max_in_flight_batches,
        limits=settings.limits(),
        publish_labels=labels.publish,
        max_labels=settings.max_labels_per_request,
    )
    consumers = []
    if settings.json_topic:
        handler = JsonTopicHandler(
            raw,
            batch_rows=settings.batch_rows,
            limits=settings.limits(),
            window_offsets=settings.json_window_offsets,
            linger_s=settings.json_linger_ms / 1000,
        )
        consumers.append(json_consumer(common, publisher, JSON_GROUP, topics.INGEST_JSON, handler))
    if settings.labels_json_topic:
        labels_handler = JsonLabelsHandler(
            labels,
            chunk=LABELS_PER_BATCH,
            window_offsets=settings.json_window_offsets,
            linger_s=settings.json_linger_ms / 1000,
        )
        consumers.append(
            json_consumer(common, publisher, LABELS_JSON_GROUP, topics.LABELS_JSON, labels_handler)
        )
    binding = ServiceBinding(
        add=ingestion_pb2_grpc.add_IngestionServiceServicer_to_server,
        servicer=servicer,
        full_name=SERVICE,
        roles={"Ingest": INGEST, "IngestStream": INGEST, "IngestLabels": INGEST},
    )
    await runtime.serve("ingestion", common, [binding], publisher=publisher, consumers=consumers)


def json_consumer(
    common: CommonSettings,
    publisher: EventPublisher,
    group: str,
    topic: str,
    handler: JsonTopicHandler | JsonLabelsHandler,
) -> EventConsumer:
    """The consumer of a public JSON topic, its handler coalescing messages across polls."""
    consumer = EventConsumer(
        bootstrap=common.kafka_connection(),
        group=group,
        topic_names=[topic],
        publisher=publisher,
        on_batch=handler.handle_records,
        on_drain=handler.drain,
        commit_metadata=handler.commit_metadata,
        max_pending_polls=JSON_POLLS_IN_FLIGHT,
        group_membership=common.consumer_group_membership,
    )
    handler.follow(consumer.behind)
    handler.remember_cuts(consumer.mark, consumer.committed_metadata)
    return consumer
