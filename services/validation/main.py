"""Entry point of the validation service: wiring only.

Run with `python -m driftloop.services.validation`.
"""

from __future__ import annotations

import asyncio

from driftloop.protos.validation.v1 import validation_pb2_grpc
from driftloop.services.validation.adapters.grpc import ValidationServicer
from driftloop.services.validation.adapters.kafka import RecordBatchHandler
from driftloop.services.validation.core.catalog import SchemaCatalog
from driftloop.services.validation.core.key_catalog import KeyCatalog
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.services.validation.settings import ValidationSettings
from driftloop.shared import runtime
from driftloop.shared.auth import INGEST
from driftloop.shared.bus import topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.grpc.server import ServiceBinding
from driftloop.shared.logging import configure
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

RECORD_BATCH_BUFFER = 4 * 1024 * 1024
SERVICE = "driftloop.validation.v1.ValidationService"
GROUP = "validation"


def main() -> None:
    common = CommonSettings()
    settings = ValidationSettings()
    configure("validation", json=common.log_json, level=common.log_level)
    asyncio.run(run(common, settings))


async def run(common: CommonSettings, settings: ValidationSettings) -> None:
    """Build the parts inside the event loop (aiokafka's clients need a running loop)."""
    store = open_object_store(common)
    catalog = SchemaCatalog(store, cache_seconds=settings.schema_cache_seconds)
    quality = QualityTracker()
    # why: record batches are large; a bigger per-partition buffer lets several travel per
    # produce request instead of one round trip each
    publisher = EventPublisher(
        common.kafka_connection(), "validation", max_batch_bytes=RECORD_BATCH_BUFFER
    )
    keys = KeyCatalog(store, max_keys=settings.unique_max_keys)
    handler = RecordBatchHandler(
        store,
        catalog,
        quality,
        publisher,
        keys=keys,
        max_inline_bytes=settings.validated_inline_max_bytes,
    )
    consumer = EventConsumer(
        bootstrap=common.kafka_connection(),
        group=GROUP,
        topic_names=[topics.RECORDS_RAW],
        publisher=publisher,
        on_batch=handler.handle_records,
        group_membership=common.consumer_group_membership,
        max_records=settings.poll_batches,
        max_pending_polls=settings.polls_in_flight,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    binding = ServiceBinding(
        add=validation_pb2_grpc.add_ValidationServiceServicer_to_server,
        servicer=ValidationServicer(catalog, quality),
        full_name=SERVICE,
        roles={"PutSchema": INGEST},
    )
    await runtime.serve("validation", common, [binding], publisher=publisher, consumers=[consumer])
