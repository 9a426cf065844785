"""Validation of one poll of raw batches: row and batch checks (unique keys included), quality
counts, then curation into Parquet and a manifest version; returns what to publish (outcomes)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import structlog

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
from driftloop.services.validation.core.outcomes import (
    BatchOutcome,
    CuratedBatch,
    CuratedRows,
    DatasetVersioned,
    RejectedRow,
    RejectedRows,
    RunOutcome,
)
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.services.validation.core.schema import DatasetSchema
from driftloop.shared.manifest import DatasetManifest
from driftloop.shared.objectstore import ObjectStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RawBatch:
    """One raw batch of rows of one dataset, under an id that its redeliveries share."""

    dataset: str
    batch_id: str
    table: pa.Table
    source: str = ""
    """How the rows arrived: "grpc", "json-topic", "file"."""


@dataclass
class CheckedBatch:
    """One raw batch after its row and batch checks."""

    position: int
    """Its place in the poll."""
    raw: RawBatch
    schema_hash: str
    verdict: Verdict
    flags: list[BatchFlag] = field(default_factory=list)
    rejected_json: list[str] | None = None
    """The rejected rows as JSON, once encoded (curate does it)."""

    @property
    def dataset(self) -> str:
        return self.raw.dataset


@dataclass
class _Run:
    """Consecutive batches of one poll, of one dataset and schema, after curation."""

    members: list[CheckedBatch]
    manifest: DatasetManifest | None
    files: list[CuratedFile]
    """Files to publish: the ones just written, and those holding redelivered batches."""


class ValidationPipeline:
    """Validates polls in order: `check` a poll, then `curate` it once the previous one is done.

    A poll's checks may run while the previous poll is curated; checks that use unique keys
    wait until no checked poll awaits curation, so the keys include every earlier row.
    """

    def __init__(
        self,
        store: ObjectStore,
        catalog: SchemaCatalog,
        quality: QualityTracker,
        *,
        keys: KeyCatalog | None = None,
        max_inline_bytes: int,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._quality = quality
        self._max_inline_bytes = max_inline_bytes
        """A curated file no larger than this also carries its bytes (0: references only)."""
        self._writer = ManifestWriter(store)
        self._keys = keys if keys is not None else KeyCatalog(store)
        self._curated = threading.Condition()
        self._uncurated = 0

    async def check(self, batches: list[RawBatch]) -> list[CheckedBatch]:
        """Check every batch of one poll (in a worker thread) and count it in the quality
        report. The poll then awaits curation: pass it to `curate` exactly once."""
        try:
            checked = await asyncio.to_thread(self._check, batches)
        except BaseException:
            self._keys.forget()  # they may hold keys of rows that will not be curated
            raise
        for item in checked:
            self._quality.record(item.dataset, item.raw.batch_id, item.verdict, item.flags)
        with self._curated:
            self._uncurated += 1
        return checked

    async def curate(
        self, checked: list[CheckedBatch], *, after: Awaitable[None] | None = None
    ) -> list[RunOutcome]:
        """Curate a checked poll once `after` (the previous poll's completion) is done, so that
        versions and events stay in poll order: usually one file and one manifest version per
        dataset. Returns what to publish. If curating fails, the key indexes are dropped (they
        may hold keys of rows that were not curated) and rebuilt from the curated data."""
        # why: encoding the rejected rows as JSON is off the poll loop's path: it runs while
        # the previous poll is curated and this one waits
        encoding = asyncio.ensure_future(asyncio.to_thread(_encode, checked))
        try:
            if after is not None:
                await after
            runs = await asyncio.to_thread(self._curate_or_forget, checked)
        finally:
            with self._curated:
                self._uncurated -= 1
                self._curated.notify_all()
            await asyncio.wait([encoding])  # never left running
            encoding.exception()  # retrieved here, so a failure is never reported twice
        encoding.result()
        return [self._outcome(run) for run in runs]

    def _check(self, batches: list[RawBatch]) -> list[CheckedBatch]:
        """Blocking: row and batch checks of every batch. An inferred schema grows by the new
        columns of rows it accepted (never of rejected ones), and then the poll is checked once
        more against the grown schema, so those columns are checked and curated at once."""
        schemas = [self._catalog.for_batch(batch.dataset, batch.table) for batch in batches]
        checked = self._check_against(batches, schemas)
        grown = [
            self._catalog.grow(schema, _accepted_rows(item.raw.table, item.verdict))
            for item, schema in zip(checked, schemas, strict=True)
        ]
        if not any(grown):
            return checked
        schemas = [self._catalog.for_batch(batch.dataset, batch.table) for batch in batches]
        return self._check_against(batches, schemas)

    def _check_against(
        self, batches: list[RawBatch], schemas: list[DatasetSchema]
    ) -> list[CheckedBatch]:
        """A run of batches of one dataset under one schema is checked as one table
        (check_batches); the result is in the batches' order."""
        runs = itertools.groupby(
            zip(range(len(batches)), batches, schemas, strict=True),
            key=lambda item: (item[1].dataset, item[2]),
        )
        checked = []
        for (dataset, schema), run in runs:
            members = list(run)
            verdicts = self._verdicts(dataset, schema, [batch for _, batch, _ in members])
            rates = self._quality.null_rates(dataset)
            for (position, batch, _), verdict in zip(members, verdicts, strict=True):
                flags = batch_flags(schema, batch.batch_id, verdict, rates)
                checked.append(CheckedBatch(position, batch, schema.schema_hash, verdict, flags))
        return checked

    def _verdicts(
        self, dataset: str, schema: DatasetSchema, batches: list[RawBatch]
    ) -> list[Verdict]:
        if not schema.unique_columns:
            return check_batches(schema, [batch.table for batch in batches])
        verdicts = []
        for batch in batches:
            with self._curated:  # the keys must include every earlier poll's, curated
                self._curated.wait_for(lambda: self._uncurated == 0)
                head = self._writer.head(dataset)
                keys = self._keys.for_dataset(dataset, schema.unique_columns, head)
                verdicts.append(check_batch(schema, batch.table, keys, batch.batch_id))
        return verdicts

    def _curate_or_forget(self, checked: list[CheckedBatch]) -> list[_Run]:
        try:
            return self._curate(checked)
        except BaseException:
            self._keys.forget()
            raise

    def _curate(self, checked: list[CheckedBatch]) -> list[_Run]:
        """Blocking: curate each run of batches of one dataset and schema. A run's files to
        publish are the ones written now and, for batches curated before (redelivered after a
        restart or rebalance), the files holding them, read back from the store: their
        CuratedRows may never have reached the bus."""
        runs = []
        for (dataset, schema_hash), group in itertools.groupby(
            checked, key=lambda c: (c.dataset, c.schema_hash)
        ):
            members = list(group)
            parts = [
                CuratedPart(m.raw.batch_id, m.verdict.accepted, len(m.verdict.rejections))
                for m in members
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
            runs.append(_Run(members, done.manifest, files))
        return runs

    def _outcome(self, run: _Run) -> RunOutcome:
        version = None
        if run.manifest is not None and any(m.verdict.accepted_rows for m in run.members):
            last = run.members[-1]
            version = DatasetVersioned(
                dataset=last.dataset,
                manifest_version=run.manifest.version,
                total_rows=run.manifest.total_rows,
                manifest_key=run.manifest.key,
                cause=last.position,
            )
        return RunOutcome(
            files=tuple(self._claim_check(run, file) for file in run.files),
            batches=tuple(_batch_outcome(m) for m in run.members),
            version=version,
        )

    def _claim_check(self, run: _Run, file: CuratedFile) -> CuratedRows:
        entry = file.entry
        inline = len(file.data) <= self._max_inline_bytes
        if self._max_inline_bytes and not inline:
            log.warning(
                "curated_file_too_large_to_inline",
                file=entry.key,
                bytes=len(file.data),
                limit=self._max_inline_bytes,
            )
        counts = entry.batch_rows or [0] * len(entry.all_batch_ids())
        sources = {m.raw.batch_id: m.raw.source for m in run.members}
        first = run.members[0]
        return CuratedRows(
            dataset=first.dataset,
            manifest_version=run.manifest.version if run.manifest else 0,
            file_key=entry.key,
            sha256=entry.sha256,
            row_count=entry.rows,
            byte_size=len(file.data),
            parquet=file.data if inline else b"",
            batches=tuple(
                CuratedBatch(batch_id=b, rows=n, source=sources.get(b, ""))
                for b, n in zip(entry.all_batch_ids(), counts, strict=True)
            ),
            schema_hash=first.schema_hash,
            cause=first.position,
        )


def _encode(checked: list[CheckedBatch]) -> None:
    """Blocking: each batch's rejected rows as JSON."""
    for item in checked:
        item.rejected_json = rejected_rows_json(item.raw.table, item.verdict.rejections)


def _batch_outcome(item: CheckedBatch) -> BatchOutcome:
    verdict = item.verdict
    rejected = None
    if verdict.rejections:
        rows_json = item.rejected_json or []
        rejected = RejectedRows(
            dataset=item.dataset,
            batch_id=item.raw.batch_id,
            rows=tuple(
                RejectedRow(row_index=r.row_index, reason=r.reason, row_json=j)
                for r, j in zip(verdict.rejections, rows_json, strict=True)
            ),
            cause=item.position,
        )
    return BatchOutcome(item.dataset, verdict.accepted_rows, len(verdict.rejections), rejected)


def _log_curated(
    dataset: str,
    members: list[CheckedBatch],
    manifest: DatasetManifest | None,
    fresh: list[str],
) -> None:
    verdicts = [m.verdict for m in members]
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


def _accepted_rows(table: pa.Table, verdict: Verdict) -> pa.Table:
    """The rows of `table` the verdict accepted, with all their columns (known or not)."""
    if not verdict.rejections:
        return table
    keep = np.ones(table.num_rows, dtype=bool)
    keep[[r.row_index for r in verdict.rejections]] = False
    return table.filter(pa.array(keep))
