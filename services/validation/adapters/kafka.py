"""Validation's Kafka side: decode the RecordBatches one poll of driftloop.records.raw returned,
let the pipeline check and curate them, then publish a claim check of each curated file
(CuratedRows), the rejected rows with their reasons and the new dataset version, in poll order."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord
from google.protobuf.message import Message
from prometheus_client import Counter

from driftloop.services.validation.adapters import pb
from driftloop.services.validation.core.catalog import SchemaCatalog
from driftloop.services.validation.core.key_catalog import KeyCatalog
from driftloop.services.validation.core.outcomes import RunOutcome
from driftloop.services.validation.core.pipeline import CheckedBatch, ValidationPipeline
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import MAX_MESSAGE_BYTES
from driftloop.shared.metric_labels import BoundedLabel
from driftloop.shared.objectstore import ObjectStore

DATASET_LABEL = BoundedLabel("dataset")
ROWS_VALIDATED = Counter(
    "driftloop_validation_rows_total", "Rows checked by validation", ["dataset", "outcome"]
)
MAX_INLINE_PARQUET = MAX_MESSAGE_BYTES - (64 << 10)
"""The largest curated file that can travel inline on driftloop.records.validated (the envelope
and batch list need the rest of a message); the settings' MAX_INLINE_BYTES must equal it."""


class RecordBatchHandler:
    """Handles RecordBatch envelopes of driftloop.records.raw (consumer group "validation")."""

    def __init__(
        self,
        store: ObjectStore,
        catalog: SchemaCatalog,
        quality: QualityTracker,
        publisher: EventPublisher,
        *,
        keys: KeyCatalog | None = None,
        max_inline_bytes: int = 0,
    ) -> None:
        """`max_inline_bytes`: curated files no larger than this also carry their Parquet bytes;
        0 publishes claim checks only (why: no in-repo consumer reads the rows from the bus,
        and whole files made messages of up to ~16 MB that a default Kafka refuses)."""
        if not 0 <= max_inline_bytes <= MAX_INLINE_PARQUET:
            raise ValueError(
                f"max_inline_bytes is {max_inline_bytes}; it must be 0 (references only) to "
                f"{MAX_INLINE_PARQUET} (the largest file a message can carry)"
            )
        self._pipeline = ValidationPipeline(
            store, catalog, quality, keys=keys, max_inline_bytes=max_inline_bytes
        )
        self._publisher = publisher
        self._previous: asyncio.Future[None] | None = None

    async def handle(self, event: envelope.Envelope) -> None:
        """One envelope (for an `on_event` consumer)."""
        await (await self._process([event]))

    async def handle_records(self, records: list[ConsumerRecord]) -> asyncio.Future[None]:
        """All records of one poll (for an `on_batch` consumer). Any bad record fails the whole
        call before anything is written, so the bus retries them one by one.

        Returns once the poll's rows are checked. The returned future finishes the poll, in
        order after the previous one: curated files (usually one) and one manifest version per
        dataset, then the events, done when the broker has acknowledged every one (the bus
        commits the poll's offsets only then, and meanwhile checks the next poll). If curating
        fails, it and every later poll's future fail: the consumer stops and nothing is
        committed."""
        return await self._process([envelope.decode(r.value) for r in records])

    async def _process(self, events: list[envelope.Envelope]) -> asyncio.Future[None]:
        batches = [pb.raw_batch_from_event(event) for event in events]
        checked = await self._pipeline.check(batches)
        self._previous = asyncio.ensure_future(self._finish(events, checked, self._previous))
        return self._previous

    async def _finish(
        self,
        events: list[envelope.Envelope],
        checked: list[CheckedBatch],
        previous: asyncio.Future[None] | None,
    ) -> None:
        runs = await self._pipeline.curate(checked, after=previous)
        sends: list[asyncio.Task[None]] = []
        for run in runs:
            sends.extend(await self._publish_run(run, events))
        await asyncio.gather(*sends)

    async def _publish_run(
        self, run: RunOutcome, events: list[envelope.Envelope]
    ) -> list[asyncio.Task[None]]:
        """Hand a run's events to the producer: files, rejected rows, then the version."""
        sends = []
        for curated in run.files:
            payload = pb.curated_rows_to_pb(curated)
            sends.append(
                await self._enqueue(
                    topics.RECORDS_VALIDATED, curated.dataset, payload, events[curated.cause]
                )
            )
        for outcome in run.batches:
            rejected = outcome.rejected
            if rejected is not None:
                payload = pb.rejected_rows_to_pb(rejected)
                sends.append(
                    await self._enqueue(
                        topics.RECORDS_REJECTED, outcome.dataset, payload, events[rejected.cause]
                    )
                )
            dataset = DATASET_LABEL(outcome.dataset)
            ROWS_VALIDATED.labels(dataset, "accepted").inc(outcome.accepted_rows)
            ROWS_VALIDATED.labels(dataset, "rejected").inc(outcome.rejected_rows)
        version = run.version
        if version is not None:
            payload = pb.dataset_versioned_to_pb(version)
            sends.append(
                await self._enqueue(
                    topics.RECORDS_VALIDATED, version.dataset, payload, events[version.cause]
                )
            )
        return sends

    async def _enqueue(
        self, topic: str, dataset: str, payload: Message, cause: envelope.Envelope
    ) -> asyncio.Task[None]:
        event = self._publisher.event(payload, cause=cause)
        return await self._publisher.enqueue(topic, dataset, event)
