"""Batch-level checks flag a batch (null-rate spike, constant column, values far outside the
schema's bounds) without rejecting rows, and only batches big enough to judge."""

from __future__ import annotations

import pyarrow as pa
import pytest

from driftloop.services.validation.core import schema as schemas
from driftloop.services.validation.core.batch_checks import batch_flags
from driftloop.services.validation.core.checks import check_batch
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.services.validation.core.schema import ColumnSpec

pytestmark = pytest.mark.unit

SCHEMA = schemas.declare(
    "d",
    [ColumnSpec("x", "float", min=0, max=10), ColumnSpec("c", "string"), ColumnSpec("n", "float")],
)


def test_a_bad_batch_is_flagged_for_each_batch_check() -> None:
    rows = 40
    table = pa.table(
        {
            "x": [50.0 if i % 2 else 1.0 + i % 3 for i in range(rows)],
            "c": ["same"] * rows,
            "n": [None if i < 30 else float(i) for i in range(rows)],
        }
    )
    verdict = check_batch(SCHEMA, table)
    flags = batch_flags(SCHEMA, "b1", verdict, {"n": 0.0, "x": 0.0, "c": 0.0})
    found = {(f.column, f.check) for f in flags}
    assert ("x", "outside_bounds") in found
    assert ("c", "constant_column") in found
    assert ("n", "null_rate_spike") in found
    assert ("x", "constant_column") not in found
    assert all(f.batch_id == "b1" for f in flags)
    assert verdict.accepted_rows == 20, "batch checks do not reject rows"


def test_healthy_or_small_batches_are_not_flagged_and_null_history_accumulates() -> None:
    good = pa.table(
        {"x": [float(i % 10) for i in range(40)], "c": ["a", "b"] * 20, "n": [1.0] * 40}
    )
    quality = QualityTracker()
    verdict = check_batch(SCHEMA, good)
    assert [f.check for f in batch_flags(SCHEMA, "g", verdict, {})] == ["constant_column"]
    quality.record("d", "g", verdict, [])
    assert quality.null_rates("d") == {"x": 0.0, "c": 0.0, "n": 0.0}
    small = pa.table({"x": [99.0] * 5, "c": ["a"] * 5, "n": [None] * 5})
    assert batch_flags(SCHEMA, "s", check_batch(SCHEMA, small), {"n": 0.0}) == []


def test_a_column_that_changes_only_after_its_first_rows_is_not_constant() -> None:
    rows = 200  # more than the rows peeked at first
    table = pa.table(
        {
            "x": [1.0] * (rows - 1) + [2.0],
            "c": ["a"] * 150 + [None] * 49 + ["b"],
            "n": [None] * 100 + [3.0] * 100,  # nulls first, then one value: constant
        }
    )
    flags = batch_flags(SCHEMA, "late", check_batch(SCHEMA, table), {})
    found = {(f.column, f.check) for f in flags}
    assert ("x", "constant_column") not in found
    assert ("c", "constant_column") not in found
    assert ("n", "constant_column") in found
