"""Validation's Kafka side: check each RecordBatch from driftloop.records.raw, curate the good
rows, then publish them (and the new dataset version) and the rejected rows with their reasons."""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import Counter

from driftloop.events.v1 import events_pb2
from driftloop.services.validation.catalog import SchemaCatalog
from driftloop.services.validation.checks import Verdict, check_batch, rejected_rows_json
from driftloop.services.validation.quality import QualityTracker
from driftloop.shared import envelope, topics
from driftloop.shared.bus import EventPublisher
from driftloop.shared.errors import InvalidInput
from driftloop.shared.manifest import DatasetManifest, curate_batch, latest_manifest
from driftloop.shared.names import check_name
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.records import ipc_to_table, table_to_ipc

log = structlog.get_logger(__name__)

ROWS_VALIDATED = Counter(
    "driftloop_validation_rows_total", "Rows checked by validation", ["dataset", "outcome"]
)


class RecordBatchHandler:
    """Handles RecordBatch envelopes of driftloop.records.raw (consumer group "validation")."""

    def __init__(
        self,
        store: ObjectStore,
        catalog: SchemaCatalog,
        quality: QualityTracker,
        publisher: EventPublisher,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._quality = quality
        self._publisher = publisher

    async def handle(self, event: envelope.Envelope) -> None:
        if event.WhichOneof("payload") != "record_batch":
            raise InvalidInput(f"expected a RecordBatch on {topics.RECORDS_RAW}, got {event.type}")
        batch = event.record_batch
        dataset = check_name("dataset", batch.dataset)
        table = ipc_to_table(batch.arrow_ipc)
        schema = await asyncio.to_thread(self._catalog.for_batch, dataset, table)
        verdict = await asyncio.to_thread(check_batch, schema, table)
        manifest = await asyncio.to_thread(
            self._curate, dataset, batch.batch_id, verdict, schema.schema_hash
        )
        if verdict.accepted_rows:
            await self._publish_accepted(event, verdict, manifest)
        if verdict.rejections:
            rows_json = await asyncio.to_thread(rejected_rows_json, table, verdict.rejections)
            await self._publish_rejected(event, verdict, rows_json)
        self._quality.record(dataset, batch.batch_id, verdict)
        ROWS_VALIDATED.labels(dataset, "accepted").inc(verdict.accepted_rows)
        ROWS_VALIDATED.labels(dataset, "rejected").inc(len(verdict.rejections))
        log.info(
            "batch_validated",
            dataset=dataset,
            batch_id=batch.batch_id,
            rows=verdict.total_rows,
            accepted=verdict.accepted_rows,
            rejected=len(verdict.rejections),
            unknown_columns=verdict.unknown_columns,
            manifest_version=manifest.version if manifest else 0,
        )

    def _curate(
        self, dataset: str, batch_id: str, verdict: Verdict, schema_hash: str
    ) -> DatasetManifest | None:
        if not verdict.accepted_rows:
            return latest_manifest(self._store, dataset)
        return curate_batch(self._store, dataset, batch_id, verdict.accepted, schema_hash)

    async def _publish_accepted(
        self, cause: envelope.Envelope, verdict: Verdict, manifest: DatasetManifest | None
    ) -> None:
        batch = cause.record_batch
        version = manifest.version if manifest else 0
        accepted = events_pb2.RecordBatch(
            dataset=batch.dataset,
            batch_id=batch.batch_id,
            arrow_ipc=table_to_ipc(verdict.accepted),
            row_count=verdict.accepted_rows,
            source=batch.source,
            manifest_version=version,
        )
        await self._publisher.publish(
            topics.RECORDS_VALIDATED, batch.dataset, self._publisher.event(accepted, cause=cause)
        )
        if manifest is None:
            return
        versioned = events_pb2.DatasetVersioned(
            dataset=batch.dataset,
            manifest_version=manifest.version,
            total_rows=manifest.total_rows,
            manifest_key=manifest.key,
        )
        await self._publisher.publish(
            topics.RECORDS_VALIDATED, batch.dataset, self._publisher.event(versioned, cause=cause)
        )

    async def _publish_rejected(
        self, cause: envelope.Envelope, verdict: Verdict, rows_json: list[str]
    ) -> None:
        batch = cause.record_batch
        rejected = events_pb2.RejectedRows(
            dataset=batch.dataset,
            batch_id=batch.batch_id,
            rows=[
                events_pb2.RejectedRow(row_index=r.row_index, reason=r.reason, row_json=j)
                for r, j in zip(verdict.rejections, rows_json, strict=True)
            ],
        )
        await self._publisher.publish(
            topics.RECORDS_REJECTED, batch.dataset, self._publisher.event(rejected, cause=cause)
        )
