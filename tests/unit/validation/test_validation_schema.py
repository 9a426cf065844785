"""Validation schemas: declaring (with checks), inferring from a batch, hashing, JSON round trip."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from driftloop.protos.validation.v1 import validation_pb2
from driftloop.services.validation.adapters.pb import column_from_pb, schema_to_pb
from driftloop.services.validation.core import schema as schemas
from driftloop.services.validation.core.schema import ColumnSpec, DatasetSchema
from driftloop.shared.errors import InvalidInput, TooLarge

pytestmark = pytest.mark.unit


def test_infer_types_and_required_from_the_first_batch() -> None:
    table = pa.table(
        {
            "age": pa.array([30, 40, None], type=pa.int64()),
            "score": [0.5, 1.5, 2.5],
            "name": ["a", "b", "c"],
            "ok": [True, False, True],
            "maybe": pa.array([1.0, float("nan"), 2.0]),
            "nothing": pa.array([None, None, None]),
            "nested": [{"a": 1}, {"a": 2}, {"a": 3}],
            "_ingested_at": [1.0, 2.0, 3.0],
        }
    )
    schema = schemas.infer("d", table)
    assert schema.origin == "inferred"
    assert [(c.name, c.type, c.required) for c in schema.columns] == [
        ("age", "int", False),
        ("score", "float", True),
        ("name", "string", True),
        ("ok", "bool", True),
        ("maybe", "float", False),
    ]
    assert all(c.min is None and c.max is None and not c.categories for c in schema.columns)


def test_hash_is_canonical_and_changes_with_the_columns() -> None:
    a = schemas.declare("d", [ColumnSpec("x", "int", True, 0, 10)])
    b = schemas.declare("d", [ColumnSpec("x", "int", True, 0.0, 10.0)])
    c = schemas.declare("d", [ColumnSpec("x", "int", True, 0, 11)])
    assert a.schema_hash == b.schema_hash != c.schema_hash
    assert len(a.schema_hash) == 64


def test_json_and_protobuf_round_trips() -> None:
    schema = schemas.declare(
        "d",
        [
            ColumnSpec("x", "float", True, min=-1.5),
            ColumnSpec("c", "string", categories=("a", "b")),
        ],
    )
    assert DatasetSchema.from_json(schema.to_json()) == schema
    pb = schema_to_pb(schema)
    assert not pb.columns[0].HasField("max") and pb.columns[0].min == -1.5
    back = schemas.declare(pb.dataset, [column_from_pb(c) for c in pb.columns])
    assert back == schema


def test_unreadable_stored_schema_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="not a readable schema"):
        DatasetSchema.from_json(b"{nope")


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ([], "declares no columns"),
        ([ColumnSpec("x", "decimal")], "type 'decimal' is not one of"),
        ([ColumnSpec("", "int")], "empty name"),
        ([ColumnSpec("_x", "int")], "reserved"),
        ([ColumnSpec("x", "int"), ColumnSpec("x", "float")], "more than once"),
        ([ColumnSpec("x", "string", min=1)], "min only applies"),
        ([ColumnSpec("x", "int", min=5, max=1)], "above max"),
        ([ColumnSpec("x", "float", max=float("nan"))], "NaN"),
        ([ColumnSpec("x", "int", categories=("a",))], "categories only apply"),
        ([ColumnSpec("x", "string", categories=("a", "a"))], "repeat"),
    ],
)
def test_declared_schemas_are_checked(columns: list[ColumnSpec], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        schemas.declare("d", columns)


def test_declared_schema_needs_a_valid_dataset_name() -> None:
    with pytest.raises(InvalidInput, match="dataset name"):
        schemas.declare("a/b", [ColumnSpec("x", "int")])


def test_column_from_pb_keeps_unset_bounds_unset() -> None:
    column = column_from_pb(validation_pb2.ColumnSchema(name="x", type="int", max=3))
    assert column.min is None and column.max == 3.0


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            [ColumnSpec(f"c{i}", "int") for i in range(schemas.MAX_COLUMNS + 1)],
            "2,001 columns; the limit is 2,000",
        ),
        ([ColumnSpec("n" * 300, "int")], "the name has 300 characters; the limit is 256"),
        (
            [ColumnSpec("c", "string", categories=tuple(map(str, range(10_001))))],
            "10,001 categories; the limit is 10,000",
        ),
        (
            [ColumnSpec("c", "string", categories=("a", "x" * 2000))],
            "a category has 2,000 characters; the limit is 1,024",
        ),
    ],
)
def test_oversized_schemas_are_refused_saying_which_limit(
    columns: list[ColumnSpec], message: str
) -> None:
    with pytest.raises(TooLarge, match=message):
        schemas.declare("d", columns)


def test_schema_file_with_yaml_aliases_is_refused(tmp_path: Path) -> None:
    from driftloop.shared.cli.commands.datasets import schema_from_yaml

    path = tmp_path / "bomb.yaml"
    path.write_text("a: &a [x, x, x]\nb: &b [*a, *a, *a]\ncolumns: [*b, *b]\n")
    with pytest.raises(InvalidInput, match="anchors and aliases"):
        schema_from_yaml("d", path)
    path.write_text("columns:\n  - {name: x, type: int, min: 0}\n")
    assert [c.name for c in schema_from_yaml("d", path).columns] == ["x"]
