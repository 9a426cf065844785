"""Validation's Kafka side: check the RecordBatches one poll of driftloop.records.raw returned,
curate their good rows as Parquet (usually one file and one manifest version per dataset and
poll), then publish each curated file (CuratedRows), the rejected rows with their reasons and
the new dataset version."""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass, field

import pyarrow as pa
import structlog
from aiokafka import ConsumerRecord
from prometheus_client import Counter

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.validation.core.batch_checks import BatchFlag, batch_flags
from driftloop.services.validation.core.catalog import SchemaCatalog
from driftloop.services.validation.core.checks import (
    Verdict,
    check_batch,
    check_batches,
    rejected_rows_json,
)
from driftloop.services.validation.core.curation import CuratedFile, CuratedPart, ManifestWriter
from driftloop.services.validation.core.key_catalog import KeyCatalog
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.kafka import MAX_MESSAGE_BYTES, EventPublisher
from driftloop.shared.errors import InvalidInput
from driftloop.shared.manifest import DatasetManifest
from driftloop.shared.names import check_name
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.records import ipc_to_table

log = structlog.get_logger(__name__)

ROWS_VALIDATED = Counter(
    "driftloop_validation_rows_total", "Rows checked by validation", ["dataset", "outcome"]
)
MAX_INLINE_PARQUET = MAX_MESSAGE_BYTES - (64 << 10)
"""A curated file larger than this travels on driftloop.records.validated by reference only
(file key and SHA-256; the envelope and batch list need the rest of a message)."""


@dataclass
class Run:
    """Consecutive batches of one poll, of one dataset and schema, after curation."""

    members: list[Checked]
    manifest: DatasetManifest | None
    files: list[CuratedFile]
    """Files to publish: the ones just written, and those holding redelivered batches."""


@dataclass
class Checked:
    """One raw batch after its row checks."""

    event: envelope.Envelope
    dataset: str
    table: pa.Table
    schema_hash: str = ""
    verdict: Verdict | None = None
    rejected_json: list[str] | None = None
    flags: list[BatchFlag] = field(default_factory=list)

    @property
    def batch(self) -> events_pb2.RecordBatch:
        return self.event.record_batch


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
        max_inline_bytes: int = MAX_INLINE_PARQUET,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._max_inline_bytes = max_inline_bytes
        self._quality = quality
        self._publisher = publisher
        self._writer = ManifestWriter(store)
        self._keys = keys if keys is not None else KeyCatalog(store)
        # why: a poll's checks run while the previous poll is curated and published. Checks
        # that use unique keys (or the manifest writer) wait until no poll awaits curation.
        self._curated = threading.Condition()
        self._uncurated = 0
        self._previous: asyncio.Future[None] | None = None

    async def handle(self, event: envelope.Envelope) -> None:
        """One envelope (for an `on_event` consumer)."""
        await (await self._process([_parse(event)]))

    async def handle_records(self, records: list[ConsumerRecord]) -> asyncio.Future[None]:
        """All records of one poll (for an `on_batch` consumer). Any bad record fails the whole
        call before anything is written, so the bus retries them one by one.

        Returns once the poll's rows are checked. The returned future finishes the poll, in
        order after the previous one: curated files (usually one) and one manifest version per
        dataset, then the events, done when the broker has acknowledged every one (the bus
        commits the poll's offsets only then, and meanwhile checks the next poll). If curating
        fails, it and every later poll's future fail: the consumer stops and nothing is
        committed."""
        return await self._process([_parse(envelope.decode(r.value)) for r in records])

    async def _process(self, items: list[Checked]) -> asyncio.Future[None]:
        try:
            await asyncio.to_thread(self._check, items)
        except BaseException:
            self._keys.forget()  # they may hold keys of rows that will not be curated
            raise
        for item in items:
            assert item.verdict is not None
            self._quality.record(item.dataset, item.batch.batch_id, item.verdict, item.flags)
        with self._curated:
            self._uncurated += 1
        self._previous = asyncio.ensure_future(self._finish(items, self._previous))
        return self._previous

    async def _finish(self, items: list[Checked], previous: asyncio.Future[None] | None) -> None:
        # why: encoding the rejected rows as JSON is off the poll loop's path: it runs while
        # the previous poll is curated and this one waits
        encoding = asyncio.ensure_future(asyncio.to_thread(self._encode, items))
        try:
            if previous is not None:
                await previous  # versions and events stay in poll order
            runs = await asyncio.to_thread(self._curate_or_forget, items)
        finally:
            with self._curated:
                self._uncurated -= 1
                self._curated.notify_all()
            await asyncio.wait([encoding])  # never left running
            encoding.exception()  # retrieved here, so a failure is never reported twice
        encoding.result()
        sends: list[asyncio.Task[None]] = []
        for run in runs:
            for file in run.files:
                sends.append(await self._publish_file(run, file))
            for item in run.members:
                sends.extend(await self._publish_outcome(item))
            if run.manifest is not None and any(
                m.verdict and m.verdict.accepted_rows for m in run.members
            ):
                sends.append(await self._publish_version(run.manifest, run.members[-1]))
        await asyncio.gather(*sends)

    def _curate_or_forget(self, items: list[Checked]) -> list[Run]:
        """Blocking: curated files and a manifest version per run of batches of the same
        dataset and schema. If it fails, the key indexes are dropped (they may hold keys of rows
        that were not curated) and rebuilt from the curated data on next use."""
        try:
            return self._curate(items)
        except BaseException:
            self._keys.forget()
            raise

    def _check(self, items: list[Checked]) -> None:
        """Blocking: row and batch checks of every batch. A run of batches of one dataset under
        one schema is checked as one table (check_batches)."""
        schemas = [self._catalog.for_batch(item.dataset, item.table) for item in items]
        for item, schema in zip(items, schemas, strict=True):
            item.schema_hash = schema.schema_hash
        runs = itertools.groupby(
            zip(items, schemas, strict=True), key=lambda pair: (pair[0].dataset, pair[1])
        )
        for (dataset, schema), run in runs:
            members = [item for item, _ in run]
            if schema.unique_columns:
                for item in members:
                    with self._curated:  # the keys must include every earlier poll's, curated
                        self._curated.wait_for(lambda: self._uncurated == 0)
                        head = self._writer.head(dataset)
                        keys = self._keys.for_dataset(dataset, schema.unique_columns, head)
                        item.verdict = check_batch(schema, item.table, keys, item.batch.batch_id)
            else:
                verdicts = check_batches(schema, [item.table for item in members])
                for item, verdict in zip(members, verdicts, strict=True):
                    item.verdict = verdict
            rates = self._quality.null_rates(dataset)
            for item in members:
                verdict = item.verdict
                assert verdict is not None
                item.flags = batch_flags(schema, item.batch.batch_id, verdict, rates)

    def _encode(self, items: list[Checked]) -> None:
        """Blocking: each batch's rejected rows as JSON."""
        for item in items:
            verdict = item.verdict
            assert verdict is not None
            item.rejected_json = rejected_rows_json(item.table, verdict.rejections)

    def _curate(self, items: list[Checked]) -> list[Run]:
        """Blocking: curate each run of batches of one dataset and schema. A run's files to
        publish are the ones written now and, for batches curated before (redelivered after a
        restart or rebalance), the files holding them, read back from the store: their
        CuratedRows may never have reached the bus."""
        runs = []
        for (dataset, schema_hash), group in itertools.groupby(
            items, key=lambda c: (c.dataset, c.schema_hash)
        ):
            members = list(group)
            parts = [
                CuratedPart(m.batch.batch_id, m.verdict.accepted, len(m.verdict.rejections))
                for m in members
                if m.verdict is not None
            ]
            done = self._writer.curate(dataset, parts, schema_hash)
            files = list(done.files)
            if done.manifest is not None:
                self._keys.committed(dataset, done.manifest.version)
                fresh = set(done.fresh)
                redelivered = [
                    p.batch_id for p in parts if p.batch_id not in fresh and p.accepted.num_rows
                ]
                written = {f.entry.key for f in files}
                for entry in done.manifest.files_holding(redelivered):
                    if entry.key not in written:
                        files.append(CuratedFile(entry, self._store.get(entry.key)))
            _log_curated(dataset, members, done.manifest, done.fresh)
            runs.append(Run(members, done.manifest, files))
        return runs

    async def _publish_file(self, run: Run, file: CuratedFile) -> asyncio.Task[None]:
        entry = file.entry
        inline = len(file.data) <= self._max_inline_bytes
        if not inline:
            log.warning(
                "curated_file_sent_by_reference",
                file=entry.key,
                bytes=len(file.data),
                limit=self._max_inline_bytes,
            )
        counts = entry.batch_rows or [0] * len(entry.all_batch_ids())
        sources = {m.batch.batch_id: m.batch.source for m in run.members}
        curated = events_pb2.CuratedRows(
            dataset=run.members[0].dataset,
            manifest_version=run.manifest.version if run.manifest else 0,
            file_key=entry.key,
            sha256=entry.sha256,
            row_count=entry.rows,
            parquet=file.data if inline else b"",
            batches=[
                events_pb2.CuratedBatch(batch_id=b, rows=n, source=sources.get(b, ""))
                for b, n in zip(entry.all_batch_ids(), counts, strict=True)
            ],
            schema_hash=run.members[0].schema_hash,
        )
        event = self._publisher.event(curated, cause=run.members[0].event)
        return await self._publisher.enqueue(topics.RECORDS_VALIDATED, curated.dataset, event)

    async def _publish_outcome(self, item: Checked) -> list[asyncio.Task[None]]:
        verdict, batch = item.verdict, item.batch
        assert verdict is not None
        sends = []
        if verdict.rejections:
            rows_json = item.rejected_json or []
            rejected = events_pb2.RejectedRows(
                dataset=batch.dataset,
                batch_id=batch.batch_id,
                rows=[
                    events_pb2.RejectedRow(row_index=r.row_index, reason=r.reason, row_json=j)
                    for r, j in zip(verdict.rejections, rows_json, strict=True)
                ],
            )
            event = self._publisher.event(rejected, cause=item.event)
            sends.append(
                await self._publisher.enqueue(topics.RECORDS_REJECTED, item.dataset, event)
            )
        ROWS_VALIDATED.labels(item.dataset, "accepted").inc(verdict.accepted_rows)
        ROWS_VALIDATED.labels(item.dataset, "rejected").inc(len(verdict.rejections))
        return sends

    async def _publish_version(
        self, manifest: DatasetManifest, item: Checked
    ) -> asyncio.Task[None]:
        versioned = events_pb2.DatasetVersioned(
            dataset=item.dataset,
            manifest_version=manifest.version,
            total_rows=manifest.total_rows,
            manifest_key=manifest.key,
        )
        event = self._publisher.event(versioned, cause=item.event)
        return await self._publisher.enqueue(topics.RECORDS_VALIDATED, item.dataset, event)


def _parse(event: envelope.Envelope) -> Checked:
    if event.WhichOneof("payload") != "record_batch":
        raise InvalidInput(f"expected a RecordBatch on {topics.RECORDS_RAW}, got {event.type}")
    dataset = check_name("dataset", event.record_batch.dataset)
    if not event.record_batch.batch_id:
        raise InvalidInput(f"a RecordBatch of dataset {dataset!r} has no batch_id")
    return Checked(event, dataset, ipc_to_table(event.record_batch.arrow_ipc))


def _log_curated(
    dataset: str, members: list[Checked], manifest: DatasetManifest | None, fresh: list[str]
) -> None:
    verdicts = [m.verdict for m in members if m.verdict is not None]
    log.info(
        "batches_validated",
        dataset=dataset,
        batches=len(members),
        new_batches=len(fresh),
        rows=sum(v.total_rows for v in verdicts),
        accepted=sum(v.accepted_rows for v in verdicts),
        rejected=sum(len(v.rejections) for v in verdicts),
        unknown_columns=sorted({c for v in verdicts for c in v.unknown_columns}),
        manifest_version=manifest.version if manifest else 0,
    )
