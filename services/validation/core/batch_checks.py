"""Batch-level checks: findings about a whole batch (a null-rate spike, a column holding one
value, values far outside the schema's bounds) that flag the batch in the quality report.
Rows are not rejected for these; row checks already decided each row. Pure: Arrow only."""

from __future__ import annotations

import collections
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from driftloop.services.validation.core.checks import OUT_OF_RANGE, Verdict
from driftloop.services.validation.core.schema import DatasetSchema

MIN_ROWS = 20
"""Batches smaller than this are too small to say anything about as a whole."""
NULL_SPIKE = 0.3
"""A column's null rate in a batch this much above its rate so far is a spike."""
OUTSIDE_SHARE = 0.2
"""This share of a batch's values outside the schema's min/max flags the batch."""
PEEK_ROWS = 64
"""Rows looked at first to tell a non-constant column cheaply."""


@dataclass(frozen=True)
class BatchFlag:
    batch_id: str
    column: str
    check: str
    detail: str


def batch_flags(
    schema: DatasetSchema, batch_id: str, verdict: Verdict, null_rates: dict[str, float]
) -> list[BatchFlag]:
    """Flags of one checked batch; `null_rates` are each column's null rate so far."""
    if verdict.total_rows < MIN_ROWS:
        return []
    flags: list[BatchFlag] = []
    outside = collections.Counter(
        r.column for r in verdict.rejections if r.category == OUT_OF_RANGE
    )
    accepted = verdict.accepted
    rows = accepted.num_rows
    positions = {name: i for i, name in enumerate(accepted.column_names)}
    for spec in schema.columns:
        share = outside[spec.name] / verdict.total_rows
        if share >= OUTSIDE_SHARE:
            detail = f"{share:.0%} of values outside [{spec.min}, {spec.max}]"
            flags.append(BatchFlag(batch_id, spec.name, "outside_bounds", detail))
        if spec.name not in positions or rows < MIN_ROWS:
            continue
        column = accepted.column(positions[spec.name])
        rate = column.null_count / rows
        before = null_rates.get(spec.name)
        if before is not None and rate - before >= NULL_SPIKE:
            detail = f"null rate {rate:.0%}, was {before:.0%}"
            flags.append(BatchFlag(batch_id, spec.name, "null_rate_spike", detail))
        value = _constant(column)
        if value is not None:
            flags.append(
                BatchFlag(batch_id, spec.name, "constant_column", f"every value is {value!r}")
            )
    return flags


def _constant(column: pa.ChunkedArray) -> object | None:
    """The single value of a column whose non-null values are all equal (min == max, which is
    far cheaper than counting distinct values), else None."""
    if column.null_count == len(column):
        return None
    # why: most columns show two different values within their first few rows; reading those
    # is ~20x cheaper than a min/max pass over the whole column
    head = column.slice(0, PEEK_ROWS).drop_null().to_pylist()
    if any(value != head[0] for value in head):
        return None
    if pa.types.is_boolean(column.type):
        every, some = pc.all(column).as_py(), pc.any(column).as_py()
        return every if every == some else None
    extremes = pc.min_max(column).as_py()
    low, high = extremes["min"], extremes["max"]
    return low if low == high else None


def null_counts(accepted: pa.Table, columns: list[str]) -> dict[str, int]:
    return {c: accepted.column(c).null_count for c in columns if c in accepted.column_names}
