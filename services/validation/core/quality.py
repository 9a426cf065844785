"""Quality counters per dataset since this validation process started: rows accepted and
rejected, rejections by short reason, batches, and unknown columns seen. Pure, in memory."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from driftloop.services.validation.core.batch_checks import BatchFlag
from driftloop.services.validation.core.checks import Verdict

MAX_REMEMBERED_BATCHES = 100_000
MAX_FLAGS = 100


@dataclass
class DatasetQuality:
    rows_accepted: int = 0
    rows_rejected: int = 0
    batches: int = 0
    rejection_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    unknown_columns: collections.Counter[str] = field(default_factory=collections.Counter)
    """Rows that had a value in each column the schema does not know (dropped, not rejected)."""
    flags: collections.deque[BatchFlag] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_FLAGS)
    )
    """The latest batch-level findings."""
    nulls: collections.Counter[str] = field(default_factory=collections.Counter)
    """Null values per column among accepted rows."""


class QualityTracker:
    """Counts each batch once, even when the bus delivers it again."""

    def __init__(self) -> None:
        self._datasets: dict[str, DatasetQuality] = {}
        self._batches: collections.OrderedDict[str, None] = collections.OrderedDict()

    def record(
        self, dataset: str, batch_id: str, verdict: Verdict, flags: list[BatchFlag] | None = None
    ) -> None:
        key = f"{dataset}/{batch_id}"
        if key in self._batches:
            return
        self._batches[key] = None
        if len(self._batches) > MAX_REMEMBERED_BATCHES:
            self._batches.popitem(last=False)
        quality = self._datasets.setdefault(dataset, DatasetQuality())
        quality.batches += 1
        quality.rows_accepted += verdict.accepted_rows
        quality.rows_rejected += len(verdict.rejections)
        quality.rejection_reasons.update(r.category for r in verdict.rejections)
        quality.unknown_columns.update(verdict.unknown_columns)
        quality.flags.extend(flags or [])
        accepted = verdict.accepted
        quality.nulls.update({c: accepted.column(c).null_count for c in accepted.column_names})

    def null_rates(self, dataset: str) -> dict[str, float]:
        """Each column's null rate among the rows accepted so far (empty before any)."""
        quality = self._datasets.get(dataset)
        if quality is None or not quality.rows_accepted:
            return {}
        return {c: n / quality.rows_accepted for c, n in quality.nulls.items()}

    def get(self, dataset: str) -> DatasetQuality | None:
        return self._datasets.get(dataset)

    def datasets(self) -> list[str]:
        return sorted(self._datasets)


def reason_counts(quality: DatasetQuality) -> dict[str, int]:
    """Rejections by short reason, plus one "unknown column '<name>'" entry per dropped column.

    why: the QualityReport proto has only this map; unknown columns are counted here under a
    prefix that cannot collide with a rejection category, and are not part of rows_rejected.
    """
    counts = dict(quality.rejection_reasons)
    for column, rows in quality.unknown_columns.items():
        counts[f"{UNKNOWN_COLUMN_PREFIX}{column!r}"] = rows
    return counts


UNKNOWN_COLUMN_PREFIX = "unknown column "
