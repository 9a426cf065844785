"""Validation row checks: every rule, one reason per rejected row, conservation, and a property
test that random batches never crash the checker."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftloop.services.validation.core import schema as schemas
from driftloop.services.validation.core.checks import (
    INGESTED_AT,
    Verdict,
    check_batch,
    check_batches,
    rejected_rows_json,
)
from driftloop.services.validation.core.quality import QualityTracker, reason_counts
from driftloop.services.validation.core.schema import ColumnSpec
from driftloop.shared import manifest

pytestmark = pytest.mark.unit


def check(columns: list[ColumnSpec], data: dict[str, list | pa.Array]) -> Verdict:
    return check_batch(schemas.declare("d", columns), pa.table(data))


def reasons(verdict: Verdict) -> dict[int, str]:
    return {r.row_index: r.reason for r in verdict.rejections}


def test_ingested_at_is_the_manifest_column() -> None:
    assert INGESTED_AT == manifest.INGESTED_AT


def test_required_column_missing_rejects_every_row() -> None:
    v = check([ColumnSpec("age", "int", required=True)], {"x": [1, 2]})
    assert reasons(v) == {
        0: "column 'age': required but missing from the batch",
        1: "column 'age': required but missing from the batch",
    }
    assert {r.category for r in v.rejections} == {"required"}


def test_required_null_and_nan_are_rejected_optional_nulls_pass() -> None:
    v = check(
        [ColumnSpec("a", "float", required=True), ColumnSpec("b", "string")],
        {"a": [1.0, None, float("nan")], "b": [None, "x", "y"]},
    )
    assert reasons(v) == {1: "column 'a': required but null", 2: "column 'a': required but null"}
    assert v.accepted.to_pylist() == [{"a": 1.0, "b": None}]


def test_float_column_rejects_text_that_is_not_a_number() -> None:
    v = check([ColumnSpec("age", "float")], {"age": ["31", "abc", " 2.5 ", None]})
    assert reasons(v) == {1: "column 'age': value 'abc' is not a number"}
    assert v.rejections[0].category == "not a number"
    assert v.accepted.column("age").to_pylist() == [31.0, 2.5, None]


def test_float_column_accepts_ints_and_bools() -> None:
    v = check(
        [ColumnSpec("a", "float"), ColumnSpec("b", "float")], {"a": [1, 2], "b": [True, False]}
    )
    assert v.rejections == []
    assert v.accepted.to_pylist() == [{"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 0.0}]
    assert v.accepted.schema.field("a").type == pa.float64()


def test_int_column_takes_lossless_values_only() -> None:
    v = check([ColumnSpec("n", "int")], {"n": [3.0, 3.5, float("inf"), -2.0]})
    assert reasons(v) == {
        1: "column 'n': value 3.5 is not an integer",
        2: "column 'n': value inf is not an integer",
    }
    assert v.accepted.column("n").to_pylist() == [3, -2]
    assert v.accepted.schema.field("n").type == pa.int64()


def test_int_column_from_text_and_bools() -> None:
    v = check(
        [ColumnSpec("n", "int"), ColumnSpec("b", "int")],
        {"n": ["7", "abc", "7.5"], "b": [True, False, True]},
    )
    assert reasons(v) == {
        1: "column 'n': value 'abc' is not a number",
        2: "column 'n': value '7.5' is not an integer",
    }
    assert [r.category for r in v.rejections] == ["not a number", "not an integer"]
    assert v.accepted.to_pylist() == [{"n": 7, "b": 1}]


def test_bool_column_coercions() -> None:
    v = check(
        [ColumnSpec("a", "bool"), ColumnSpec("b", "bool"), ColumnSpec("c", "bool")],
        {"a": ["true", "FALSE", "1", "maybe"], "b": [1, 0, 1.0, 0], "c": [True, False, None, True]},
    )
    assert reasons(v) == {3: "column 'a': value 'maybe' is not a boolean"}
    assert v.accepted.column("a").to_pylist() == [True, False, True]
    v = check([ColumnSpec("b", "bool")], {"b": [2, 0]})
    assert reasons(v) == {0: "column 'b': value 2 is not a boolean"}


def test_string_column_rejects_other_types() -> None:
    v = check([ColumnSpec("s", "string")], {"s": [1, None]})
    assert reasons(v) == {0: "column 's': value 1 is not a string"}


def test_ranges() -> None:
    v = check([ColumnSpec("age", "int", min=0, max=120)], {"age": [-1, 0, 120, 121, None]})
    assert reasons(v) == {
        0: "column 'age': value -1 is below the minimum 0",
        3: "column 'age': value 121 is above the maximum 120",
    }
    assert {r.category for r in v.rejections} == {"out of range"}
    v = check([ColumnSpec("x", "float", min=0.5)], {"x": [0.25, 0.5]})
    assert reasons(v) == {0: "column 'x': value 0.25 is below the minimum 0.5"}


def test_categories() -> None:
    v = check(
        [ColumnSpec("c", "string", categories=("red", "blue"))],
        {"c": ["red", "purple", None, "blue"]},
    )
    assert reasons(v) == {
        1: "column 'c': value 'purple' is not one of the categories ['red', 'blue']"
    }
    assert v.rejections[0].category == "unknown category"


def test_one_reason_per_row_in_schema_order() -> None:
    v = check(
        [ColumnSpec("a", "int", required=True), ColumnSpec("b", "int", max=1)],
        {"a": [None, 1], "b": [5, 5]},
    )
    assert reasons(v) == {
        0: "column 'a': required but null",
        1: "column 'b': value 5 is above the maximum 1",
    }


def test_unknown_columns_are_counted_not_curated_and_ingested_at_is_kept() -> None:
    v = check(
        [ColumnSpec("a", "int")],
        {
            "a": [1, 2],
            "extra": ["x", None],
            "_other": [0, 0],
            "blank": [None, None],
            INGESTED_AT: [5.0, 6.0],
        },
    )
    assert v.unknown_columns == {"extra": 1}
    assert v.rejections == []
    assert v.accepted.column_names == ["a", INGESTED_AT]
    assert v.accepted.column(INGESTED_AT).to_pylist() == [5.0, 6.0]


def test_absent_optional_column_is_curated_as_nulls_of_its_type() -> None:
    v = check([ColumnSpec("a", "int"), ColumnSpec("b", "string")], {"a": [1]})
    assert v.accepted.schema.field("b").type == pa.string()
    assert v.accepted.column("b").to_pylist() == [None]


def test_incompatible_column_type_rejects_every_row_without_crashing() -> None:
    nested = pa.array([{"k": 1}, {"k": 2}, None])
    v = check([ColumnSpec("a", "float", required=True)], {"a": nested})
    assert v.accepted_rows == 0 and len(v.rejections) == 3
    assert reasons(v)[0] == "column 'a': value {'k': 1} is not a number"
    assert reasons(v)[2] == "column 'a': required but null"


def test_rejected_rows_json_holds_the_whole_row() -> None:
    table = pa.table({"a": ["abc", "1"], "b": [float("nan"), 2.0]})
    v = check_batch(schemas.declare("d", [ColumnSpec("a", "float")]), table)
    [row] = rejected_rows_json(table, v.rejections)
    assert json.loads(row) == {"a": "abc", "b": None}


def test_empty_batch() -> None:
    v = check([ColumnSpec("a", "int", required=True)], {"a": pa.array([], type=pa.int64())})
    assert v.total_rows == 0 and v.accepted_rows == 0 and v.rejections == []


def test_quality_counts_each_batch_once() -> None:
    v = check([ColumnSpec("a", "int", min=0)], {"a": ["x", "-1", "2"], "extra": [1, 2, 3]})
    tracker = QualityTracker()
    tracker.record("d", "b1", v)
    tracker.record("d", "b1", v)  # re-delivery
    q = tracker.get("d")
    assert q is not None
    assert (q.batches, q.rows_accepted, q.rows_rejected) == (1, 1, 2)
    assert reason_counts(q) == {"not a number": 1, "out of range": 1, "unknown column 'extra'": 3}
    assert tracker.get("other") is None


# --- property: random batches against random schemas never crash and conserve rows ---------

ROWS = 6
NAMES = ["a", "b", "c", "d"]
VALUES = {
    "int": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "text": st.text(max_size=6),
    "numeric_text": st.sampled_from(["1", "2.5", "-3", "1e3", "nan", "inf", "true", "", " 7 "]),
    "bool": st.booleans(),
}


@st.composite
def random_column(draw: st.DrawFn) -> pa.Array:
    kind = draw(st.sampled_from([*VALUES, "null", "nested"]))
    if kind == "null":
        return pa.nulls(ROWS)
    if kind == "nested":
        return pa.array([{"k": i} for i in range(ROWS)])
    values = draw(st.lists(st.none() | VALUES[kind], min_size=ROWS, max_size=ROWS))
    return pa.array(values)


@st.composite
def random_spec(draw: st.DrawFn, name: str) -> ColumnSpec:
    kind = draw(st.sampled_from(schemas.COLUMN_TYPES))
    bound = st.none() | st.floats(-1e6, 1e6)
    low, high = (draw(bound), draw(bound)) if kind in ("int", "float") else (None, None)
    if low is not None and high is not None and low > high:
        low, high = high, low
    categories: tuple[str, ...] = ()
    if kind == "string":
        categories = tuple(draw(st.lists(st.text(max_size=3), unique=True, max_size=3)))
    return ColumnSpec(name, kind, draw(st.booleans()), low, high, categories)


@st.composite
def batch_and_schema(draw: st.DrawFn) -> tuple[schemas.DatasetSchema, pa.Table]:
    present = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    table = (
        pa.table({n: draw(random_column()) for n in present})
        if present
        else pa.table({INGESTED_AT: [0.0] * ROWS})
    )
    declared = draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1, max_size=4))
    return schemas.declare("d", [draw(random_spec(n)) for n in declared]), table


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_and_schema())
def test_random_batches_never_crash_and_rows_are_conserved(
    case: tuple[schemas.DatasetSchema, pa.Table],
) -> None:
    schema, table = case
    verdict = check_batch(schema, table)
    indices = [r.row_index for r in verdict.rejections]
    assert verdict.accepted_rows + len(indices) == table.num_rows
    assert indices == sorted(set(indices))
    assert verdict.accepted.num_rows == verdict.accepted_rows
    assert verdict.accepted.column_names[: len(schema.columns)] == [c.name for c in schema.columns]
    assert all(r.reason.startswith(f"column {r.column!r}: ") for r in verdict.rejections)
    assert len(rejected_rows_json(table, verdict.rejections)) == len(indices)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(NAMES), unique=True, min_size=1).flatmap(
        lambda names: st.tuples(*[random_column() for _ in names]).map(
            lambda cols: pa.table(dict(zip(names, cols, strict=True)))
        )
    )
)
def test_an_inferred_schema_accepts_the_batch_it_was_inferred_from(table: pa.Table) -> None:
    schema = schemas.infer("d", table)
    verdict = check_batch(schema, table)
    assert verdict.rejections == []
    assert verdict.accepted_rows == table.num_rows


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_and_schema(), st.lists(st.integers(0, ROWS), max_size=3))
def test_batches_checked_together_get_the_verdicts_they_get_alone(
    case: tuple[schemas.DatasetSchema, pa.Table], cuts: list[int]
) -> None:
    schema, table = case
    bounds = [0, *sorted(cuts), ROWS]
    parts = [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]
    together = check_batches(schema, parts)
    assert len(together) == len(parts)
    for part, verdict in zip(parts, together, strict=True):
        alone = check_batch(schema, part)
        assert verdict.rejections == alone.rejections
        assert verdict.accepted.equals(alone.accepted)
        assert verdict.unknown_columns == alone.unknown_columns
        assert (verdict.total_rows, verdict.accepted_rows) == (
            alone.total_rows,
            alone.accepted_rows,
        )


def test_batches_with_different_arrow_types_or_unique_keys_are_checked_one_by_one() -> None:
    schema = schemas.declare("d", [ColumnSpec("x", "int", max=10)])
    ints = pa.table({"x": pa.array([1, 50], pa.int64())})
    texts = pa.table({"x": ["3", "x"]})
    verdicts = check_batches(schema, [ints, texts])
    assert [reasons(v) for v in verdicts] == [
        {1: "column 'x': value 50 is above the maximum 10"},
        {1: "column 'x': value 'x' is not a number"},
    ]
    keyed = schemas.declare("d", [ColumnSpec("k", "int", unique=True)])
    first, second = check_batches(keyed, [pa.table({"k": [1, 2]}), pa.table({"k": [2, 3]})])
    # checked alone, each batch only knows its own keys (the service passes the dataset's)
    assert first.accepted_rows == 2 and second.accepted_rows == 2


def test_uint64_beyond_int64_is_rejected_and_other_values_stay_exact() -> None:
    big = 2**63 + 5
    exact = 2**60 + 1  # not representable as a float64
    table = pa.table({"x": pa.array([exact, big, None], pa.uint64())})
    verdict = check([ColumnSpec("x", "int")], {"x": table.column("x")})
    assert reasons(verdict) == {1: f"column 'x': value {big} is not an integer"}
    assert verdict.accepted.column("x").to_pylist() == [exact, None]
    first, second = check_batches(
        schemas.declare("d", [ColumnSpec("x", "int")]),
        [table.slice(0, 1), table.slice(1, 2)],
    )
    assert first.accepted.column("x").to_pylist() == [exact]
    assert second.accepted.column("x").to_pylist() == [None]
