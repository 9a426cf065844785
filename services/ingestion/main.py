"""Entry point of the ingestion service: wiring only.

Run with `python -m driftloop.services.ingestion`.
"""

from __future__ import annotations

import asyncio

from driftloop.ingestion.v1 import ingestion_pb2_grpc
from driftloop.services.ingestion.events import JsonTopicHandler, RawBatchPublisher
from driftloop.services.ingestion.grpc_api import IngestionServicer
from driftloop.services.ingestion.settings import IngestionSettings
from driftloop.shared import runtime, topics
from driftloop.shared.bus import EventConsumer, EventPublisher
from driftloop.shared.grpc_server import ServiceBinding
from driftloop.shared.logging import configure
from driftloop.shared.settings import CommonSettings

SERVICE = "driftloop.ingestion.v1.IngestionService"
JSON_GROUP = "ingestion-json"


def main() -> None:
    common = CommonSettings()
    settings = IngestionSettings()
    configure("ingestion", json=common.log_json, level=common.log_level)
    asyncio.run(run(common, settings))


async def run(common: CommonSettings, settings: IngestionSettings) -> None:
    """Build the parts inside the event loop (aiokafka's clients need a running loop)."""
    publisher = EventPublisher(common.bootstrap(), "ingestion")
    raw = RawBatchPublisher(publisher)
    servicer = IngestionServicer(raw.publish, batch_rows=settings.batch_rows)
    consumers = []
    if settings.json_topic:
        handler = JsonTopicHandler(raw, batch_rows=settings.batch_rows)
        consumers.append(
            EventConsumer(
                bootstrap=common.bootstrap(),
                group=JSON_GROUP,
                topic_names=[topics.INGEST_JSON],
                publisher=publisher,
                on_record=handler.handle,
                group_membership=common.consumer_group_membership,
            )
        )
    binding = ServiceBinding(
        add=ingestion_pb2_grpc.add_IngestionServiceServicer_to_server,
        servicer=servicer,
        full_name=SERVICE,
        mutating=frozenset({"Ingest", "IngestStream"}),
    )
    await runtime.serve("ingestion", common, [binding], publisher=publisher, consumers=consumers)
