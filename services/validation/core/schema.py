"""Dataset schemas: columns with a type, required flag, range and categories; declared by an
operator or inferred from a dataset's first batch. Pure: no storage, no transport."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from driftloop.shared.errors import Conflict, InvalidInput, TooLarge
from driftloop.shared.names import check_column_name, check_name

COLUMN_TYPES = ("float", "int", "string", "bool")
MAX_COLUMNS = 2000
"""Most columns a dataset schema may hold (declared, or inferred and grown)."""
MAX_CATEGORIES = 10_000
"""Most allowed categories of one string column."""
MAX_NAME_CHARS = 256
"""Longest column name."""
MAX_CATEGORY_CHARS = 1024
"""Longest allowed category value."""
ORIGINS = ("declared", "inferred")
NUMERIC_TYPES = ("float", "int")


def is_system_column(name: str) -> bool:
    """Columns starting with '_' (like `_ingested_at`) are added by driftloop, not user data."""
    return name.startswith("_")


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    required: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = field(default_factory=tuple)
    unique: bool = False
    """A key column: a non-null value may be accepted once per dataset (declared, never
    inferred); later rows with it are rejected as "duplicate key <column>=<value>"."""


UNIQUE_TYPES = ("int", "string")


@dataclass(frozen=True)
class DatasetSchema:
    dataset: str
    columns: tuple[ColumnSpec, ...]
    origin: str
    schema_hash: str

    def column(self, name: str) -> ColumnSpec | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def unique_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.unique)

    def to_json(self) -> bytes:
        body = {
            "dataset": self.dataset,
            "origin": self.origin,
            "schema_hash": self.schema_hash,
            "columns": [_column_dict(c) for c in self.columns],
        }
        return json.dumps(body, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DatasetSchema:
        try:
            body = json.loads(data)
            columns = [
                ColumnSpec(**{**c, "categories": tuple(c.get("categories", ()))})
                for c in body["columns"]
            ]
            return build(body["dataset"], columns, body["origin"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"stored schema is not a readable schema document: {exc}") from exc


def _column_dict(column: ColumnSpec) -> dict[str, Any]:
    body = {**asdict(column), "categories": list(column.categories)}
    if not column.unique:
        # why: schemas written before `unique` existed keep their hash
        del body["unique"]
    return body


def columns_hash(columns: tuple[ColumnSpec, ...] | list[ColumnSpec]) -> str:
    """SHA-256 of the canonical JSON of the columns (sorted keys, no whitespace)."""
    canonical = json.dumps(
        [_column_dict(c) for c in columns], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def build(dataset: str, columns: list[ColumnSpec], origin: str) -> DatasetSchema:
    """A schema whose columns have been checked; raises InvalidInput saying what to fix."""
    check_name("dataset", dataset)
    if origin not in ORIGINS:
        raise InvalidInput(f"schema origin {origin!r} is not one of {list(ORIGINS)}")
    if len(columns) > MAX_COLUMNS:
        raise TooLarge(
            f"schema for dataset {dataset!r} has {len(columns):,} columns; the limit is "
            f"{MAX_COLUMNS:,}"
        )
    seen: set[str] = set()
    columns = [_normalised(c) for c in columns]
    for column in columns:
        _check_column(column)
        if column.name in seen:
            raise InvalidInput(f"column {column.name!r} is declared more than once")
        seen.add(column.name)
    cols = tuple(columns)
    return DatasetSchema(dataset, cols, origin, columns_hash(cols))


def _normalised(column: ColumnSpec) -> ColumnSpec:
    """Bounds as floats and categories as a tuple, so equal schemas hash equally."""
    return replace(
        column,
        min=None if column.min is None else float(column.min),
        max=None if column.max is None else float(column.max),
        categories=tuple(column.categories),
    )


def declare(dataset: str, columns: list[ColumnSpec]) -> DatasetSchema:
    """An operator-declared schema."""
    if not columns:
        raise InvalidInput(f"schema for dataset {dataset!r} declares no columns")
    return build(dataset, columns, "declared")


def _check_column(column: ColumnSpec) -> None:
    name = column.name
    if not name or not name.strip():
        raise InvalidInput("a column has an empty name")
    if len(name) > MAX_NAME_CHARS:
        raise TooLarge(
            f"column {name[:40]!r}...: the name has {len(name):,} characters; the limit is "
            f"{MAX_NAME_CHARS}"
        )
    if is_system_column(name):
        raise InvalidInput(f"column {name!r}: names starting with '_' are reserved for driftloop")
    if column.type not in COLUMN_TYPES:
        raise InvalidInput(
            f"column {name!r}: type {column.type!r} is not one of {list(COLUMN_TYPES)}"
        )
    for bound in ("min", "max"):
        value = getattr(column, bound)
        if value is None:
            continue
        if column.type not in NUMERIC_TYPES:
            raise InvalidInput(f"column {name!r}: {bound} only applies to float or int columns")
        if math.isnan(value):
            raise InvalidInput(f"column {name!r}: {bound} is NaN")
    if column.min is not None and column.max is not None and column.min > column.max:
        raise InvalidInput(f"column {name!r}: min {column.min} is above max {column.max}")
    if column.unique and column.type not in UNIQUE_TYPES:
        raise InvalidInput(
            f"column {name!r}: unique applies to int or string columns, not {column.type}"
        )
    if column.categories:
        if len(column.categories) > MAX_CATEGORIES:
            raise TooLarge(
                f"column {name!r}: {len(column.categories):,} categories; the limit is "
                f"{MAX_CATEGORIES:,}"
            )
        longest = max(len(c) for c in column.categories)
        if longest > MAX_CATEGORY_CHARS:
            raise TooLarge(
                f"column {name!r}: a category has {longest:,} characters; the limit is "
                f"{MAX_CATEGORY_CHARS:,}"
            )
        if column.type != "string":
            raise InvalidInput(f"column {name!r}: categories only apply to string columns")
        if len(set(column.categories)) != len(column.categories):
            raise InvalidInput(f"column {name!r}: categories repeat a value")


def arrow_column_type(data_type: pa.DataType) -> str | None:
    """The schema type an Arrow type maps to, or None when it has no tabular meaning here
    (all-null, nested, binary, temporal)."""
    if pat.is_dictionary(data_type):
        data_type = data_type.value_type
    if pat.is_boolean(data_type):
        return "bool"
    if pat.is_integer(data_type):
        return "int"
    if pat.is_floating(data_type) or pat.is_decimal(data_type):
        return "float"
    if pat.is_string(data_type) or pat.is_large_string(data_type):
        return "string"
    return None


def infer(dataset: str, table: pa.Table) -> DatasetSchema:
    """Infer a schema from one batch: types from Arrow types, required when the batch had no nulls
    in the column; no ranges or categories. System columns and untyped columns are left out."""
    columns = []
    for name in table.column_names:
        if is_system_column(name) or not _nameable(name):
            continue
        kind = arrow_column_type(table.schema.field(name).type)
        if kind is None:
            continue
        column = table.column(name)
        nulls = column.null_count
        if kind == "float" and not pat.is_decimal(column.type):
            nulls += int(pc.sum(pc.is_nan(column)).as_py() or 0)
        columns.append(ColumnSpec(name=name, type=kind, required=nulls == 0))
    return build(dataset, columns, "inferred")


def _nameable(name: str) -> bool:
    try:
        check_column_name(name)
    except InvalidInput:
        return False
    return True


def check_evolution(current: DatasetSchema, proposed: DatasetSchema, *, breaking: bool) -> None:
    """Raise Conflict when replacing `current` by `proposed` is not compatible and the change
    was not declared breaking: a removed column, a new required column, a changed type.
    Adding an optional column and changing bounds, categories or `required` are compatible."""
    if breaking:
        return
    problems = []
    for column in proposed.columns:
        before = current.column(column.name)
        if before is None and column.required:
            problems.append(f"new column {column.name!r} is required (add it as optional)")
        elif before is not None and before.type != column.type:
            problems.append(f"column {column.name!r} changes type {before.type} -> {column.type}")
    removed = [c.name for c in current.columns if proposed.column(c.name) is None]
    if removed:
        problems.append(f"columns {removed} are removed")
    if problems:
        raise Conflict(
            f"schema change for dataset {current.dataset!r} is not compatible: "
            + "; ".join(problems)
            + " (declare it as a breaking change to apply it)"
        )


def with_new_columns(current: DatasetSchema, accepted: pa.Table) -> DatasetSchema | None:
    """An inferred schema grown by the typed columns it lacks that hold a value in `accepted`
    (rows that passed the current schema's checks: a rejected row never shapes a schema), as
    optional columns (a compatible change); None when there are none."""
    known = {c.name for c in current.columns}
    added = [
        ColumnSpec(name=name, type=kind, required=False)
        for name in accepted.column_names
        if name not in known
        and not is_system_column(name)
        and _nameable(name)
        and accepted.column(name).null_count < accepted.num_rows
        and (kind := arrow_column_type(accepted.schema.field(name).type)) is not None
    ]
    if not added:
        return None
    return build(current.dataset, [*current.columns, *added], current.origin)
