"""Vectorised conversion of one incoming Arrow column to a schema column type.

Says, per row, whether the value is null, convertible (losslessly), or not, and gives the
converted values and (for numbers) a float view for range checks. Pure: Arrow, numpy, pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

ARROW_TYPES = {"float": pa.float64(), "int": pa.int64(), "string": pa.string(), "bool": pa.bool_()}
INT64_LIMIT = 2.0**63
TRUE_STRINGS = ("true", "1")
FALSE_STRINGS = ("false", "0")


@dataclass(frozen=True)
class Converted:
    """One column converted to its schema type."""

    values: pa.Array
    """Values of the schema type; null where the input was null or not convertible."""
    null: np.ndarray
    """The input had no value (null, NaN, or the column was missing)."""
    bad: np.ndarray
    """The input had a value that does not convert losslessly."""
    failure: str
    """What a bad value is not: "not a number", "not an integer", ..."""
    numbers: np.ndarray | None = None
    """Float view of numeric values (NaN where null or bad), for range checks."""
    unparsed: np.ndarray | None = None
    """Rows of an int column whose value is not a number at all (vs. not integral)."""


def missing(kind: str, rows: int) -> Converted:
    none = np.zeros(rows, dtype=bool)
    numbers = np.full(rows, np.nan) if kind in ("float", "int") else None
    return Converted(pa.nulls(rows, ARROW_TYPES[kind]), ~none, none, _FAILURE[kind], numbers)


def convert(column: pa.ChunkedArray | pa.Array, kind: str) -> Converted:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pat.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return _CONVERTERS[kind](arr)


def _is_numeric(data_type: pa.DataType) -> bool:
    return (
        pat.is_integer(data_type)
        or pat.is_floating(data_type)
        or pat.is_boolean(data_type)
        or pat.is_decimal(data_type)
    )


def _is_text(data_type: pa.DataType) -> bool:
    return pat.is_string(data_type) or pat.is_large_string(data_type)


def _nulls(arr: pa.Array) -> np.ndarray:
    if not arr.null_count:
        return np.zeros(len(arr), dtype=bool)
    return np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _as_floats(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(numbers, null, unparsable) for any input column; NaN counts as no value."""
    null = _nulls(arr)
    n = len(arr)
    if _is_numeric(arr.type):
        # safe=False: integers beyond 2**53 round to the nearest double (for float columns and
        # range checks) instead of failing the whole column; int columns keep exact int64.
        as_float = arr if arr.type == pa.float64() else arr.cast(pa.float64(), safe=False)
        numbers = np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=float)
        return numbers, null | np.isnan(numbers), np.zeros(n, dtype=bool)
    if _is_text(arr.type):
        parsed = pd.to_numeric(pd.Series(arr.to_pandas(), dtype=object), errors="coerce")
        numbers = np.asarray(parsed, dtype=float)
        return numbers, null, ~null & np.isnan(numbers)
    if pat.is_null(arr.type):
        return np.full(n, np.nan), np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    return np.full(n, np.nan), null, ~null


def _float(arr: pa.Array) -> Converted:
    numbers, null, bad = _as_floats(arr)
    if arr.type == pa.float64() and not arr.null_count and not null.any():
        return Converted(arr, null, bad, "not a number", numbers)  # already clean: no copy
    numbers = np.where(null | bad, np.nan, numbers)
    values = pa.array(numbers, type=pa.float64(), mask=null | bad)
    return Converted(values, null, bad, "not a number", numbers)


def _int(arr: pa.Array) -> Converted:
    numbers, null, unparsed = _as_floats(arr)
    if pat.is_integer(arr.type):
        if arr.type == pa.int64():
            return Converted(arr, null, unparsed, "not an integer", numbers, unparsed)
        # uint64 beyond int64 is bad; every other value casts exactly (never through floats,
        # which round beyond 2**53, and whatever other rows of the column hold)
        too_big = _beyond_int64(arr)
        if too_big.any():
            arr = pc.if_else(pa.array(too_big), pa.scalar(None, arr.type), arr)
            numbers = np.where(too_big, np.nan, numbers)
        return Converted(arr.cast(pa.int64()), null, too_big, "not an integer", numbers, unparsed)
    with np.errstate(invalid="ignore"):
        integral = (
            np.isfinite(numbers) & (np.floor(numbers) == numbers) & (np.abs(numbers) < INT64_LIMIT)
        )
    bad = ~null & ~integral
    ok = ~null & ~bad
    ints = np.where(ok, numbers, 0).astype(np.int64)
    numbers = np.where(ok, numbers, np.nan)
    values = pa.array(ints, type=pa.int64(), mask=~ok)
    return Converted(values, null, bad, "not an integer", numbers, unparsed)


def _beyond_int64(arr: pa.Array) -> np.ndarray:
    """Rows of an integer column whose value does not fit int64 (only uint64 can hold one)."""
    if arr.type != pa.uint64():
        return np.zeros(len(arr), dtype=bool)
    above = pc.greater(arr, pa.scalar(2**63 - 1, pa.uint64())).fill_null(False)
    return np.asarray(above.to_numpy(zero_copy_only=False), dtype=bool)


def _bool(arr: pa.Array) -> Converted:
    null = _nulls(arr)
    if pat.is_boolean(arr.type):
        return Converted(arr, null, np.zeros(len(arr), dtype=bool), "not a boolean")
    if _is_text(arr.type):
        text = pc.utf8_lower(pc.utf8_trim_whitespace(arr.cast(pa.string())))
        truthy = _in(text, TRUE_STRINGS)
        falsy = _in(text, FALSE_STRINGS)
    elif _is_numeric(arr.type):
        numbers, null, _ = _as_floats(arr)
        truthy, falsy = numbers == 1, numbers == 0
    else:
        truthy = falsy = np.zeros(len(arr), dtype=bool)
        null = null | pat.is_null(arr.type)
    bad = ~null & ~truthy & ~falsy
    values = pa.array(truthy, type=pa.bool_(), mask=null | bad)
    return Converted(values, null, bad, "not a boolean")


def _string(arr: pa.Array) -> Converted:
    null = _nulls(arr)
    if _is_text(arr.type):
        return Converted(
            arr.cast(pa.string()), null, np.zeros(len(arr), dtype=bool), "not a string"
        )
    return Converted(pa.nulls(len(arr), pa.string()), null, ~null, "not a string")


def _in(arr: pa.Array, allowed: tuple[str, ...]) -> np.ndarray:
    found = pc.is_in(arr, value_set=pa.array(allowed, type=pa.string())).fill_null(False)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def in_categories(values: pa.Array, categories: tuple[str, ...]) -> np.ndarray:
    """True where a (string) value is one of `categories`; False for nulls."""
    return _in(values, categories)


_CONVERTERS = {"float": _float, "int": _int, "bool": _bool, "string": _string}
_FAILURE = {
    "float": "not a number",
    "int": "not an integer",
    "bool": "not a boolean",
    "string": "not a string",
}
