"""The quality report of one dataset: its durable counts (head manifest version) joined with the
counters this process keeps since it started (rows, rejection reasons, batch flags)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from driftloop.services.validation.core.batch_checks import BatchFlag
from driftloop.services.validation.core.catalog import SchemaCatalog
from driftloop.services.validation.core.quality import QualityTracker, reason_counts
from driftloop.shared.errors import NotFound
from driftloop.shared.names import check_name


@dataclass(frozen=True)
class QualityReport:
    dataset: str
    manifest_version: int
    curated_rows: int
    manifest_rows_rejected: int
    """Rows rejected as the head manifest version accounts them (durable, like curated_rows)."""
    rows_accepted: int = 0
    """This and the fields below count since this process started."""
    rows_rejected: int = 0
    batches: int = 0
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    flags: tuple[BatchFlag, ...] = ()
    """The latest batch-level findings, most recent last."""


async def quality_report(
    catalog: SchemaCatalog, quality: QualityTracker, dataset: str
) -> QualityReport:
    """The report of `dataset`; NotFound when it has neither a schema nor curated rows.

    The catalog is read in a worker thread; the tracker only on the calling (event loop)
    thread, which is the one that updates it.
    """
    check_name("dataset", dataset)
    counted = quality.get(dataset)
    if counted is None and not await asyncio.to_thread(catalog.knows, dataset):
        raise NotFound(f"dataset {dataset!r} is unknown: no schema, no curated rows")
    summary = await asyncio.to_thread(catalog.summary, dataset)
    durable = QualityReport(
        dataset=dataset,
        manifest_version=summary.manifest_version,
        curated_rows=summary.curated_rows,
        manifest_rows_rejected=summary.rows_rejected,
    )
    if counted is None:
        return durable
    return replace(
        durable,
        rows_accepted=counted.rows_accepted,
        rows_rejected=counted.rows_rejected,
        batches=counted.batches,
        rejection_reasons=reason_counts(counted),
        flags=tuple(counted.flags),
    )
