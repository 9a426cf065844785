"""Ingestion's Kafka side for labels: publish LabelBatch events to driftloop.labels keyed by
model, and read the public JSON topic driftloop.labels.json, coalescing its messages across
polls into one event per model and window, as the rows topic does (adapters/json_windows.py;
bad messages are dead-lettered with the reason)."""

from __future__ import annotations

import asyncio

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
from driftloop.services.ingestion.core.labels import (
    LABELS_PER_BATCH,
    LabelChunk,
    bundle_label_chunks,
    label_pieces,
)
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

LABELS_JSON_GROUP = "ingestion-labels-json"

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

    @property
    def publisher(self) -> EventPublisher:
        return self._publisher

    async def publish(
        self, chunks: list[LabelChunk], source: str, *, correlation_id: str = ""
    ) -> None:
        """Publish and wait until the broker has every chunk."""
        await asyncio.gather(*await self.enqueue(chunks, source, correlation_id=correlation_id))

    async def enqueue(
        self, chunks: list[LabelChunk], source: str, *, correlation_id: str = ""
    ) -> list[asyncio.Task[None]]:
        """Hand the chunks to the producer; the tasks finish when the broker has them."""
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
        return sends


class JsonLabelsHandler:
    """The `on_batch` handler of driftloop.labels.json (give `drain` as the consumer's
    `on_drain`, and the consumer's `behind` to `follow`): labels are coalesced per model
    across messages and polls like the rows of driftloop.ingest.json, and published as
    LabelBatch events of at most `chunk` labels."""

    SOURCE = "json-topic"

    def __init__(
        self,
        publisher: LabelPublisher,
        *,
        chunk: int = LABELS_PER_BATCH,
        window_offsets: int = DEFAULT_WINDOW_OFFSETS,
        linger_s: float = DEFAULT_LINGER_S,
        group: str = LABELS_JSON_GROUP,
    ) -> None:
        self._publisher = publisher
        self._chunk = chunk
        policy = WindowPolicy(window_offsets=window_offsets, max_rows=chunk, linger_s=linger_s)
        self._windows = WindowedJsonHandler(
            policy,
            label_pieces,
            self._publish,
            dead_letters=publisher.publisher,
            group=group,
        )

    async def handle_records(self, records: list[ConsumerRecord]) -> asyncio.Future[int]:
        """One poll's messages; the future completes when their labels are published."""
        return await self._windows.handle_records(records)

    async def drain(self, stopping: bool = False) -> None:
        """Let go of every held label (see WindowedJsonHandler.drain)."""
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

    async def _publish(
        self, bundle: Bundle[tuple[str, str]]
    ) -> tuple[list[asyncio.Task[None]], list[Refused]]:
        chunks = bundle_label_chunks(bundle, chunk=self._chunk)
        return await self._publisher.enqueue(chunks, self.SOURCE), []
