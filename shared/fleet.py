"""Fleets: one spec, one model per partition value. How a partition model is named
(`FLEET/COLUMN=VALUE`, values URL-safe), parsed back, and found for each row of a frame.

A partition name is a model name like any other everywhere names are stored (registry rows,
object keys, metrics labels), so it is checked here once: the fleet part is a plain model name,
each `COLUMN=VALUE` segment is percent-encoded (RFC 3986 unreserved characters stay as they are),
and nothing in it can traverse a path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

import pandas as pd

from driftloop.shared.errors import InvalidInput, TooLarge
from driftloop.shared.names import check_name, is_name, shown

MAX_PARTITION_COLUMNS = 4
MAX_NAME_CHARS = 512
"""A partition model's whole name: the fleet, then each encoded COLUMN=VALUE."""
MAX_VALUE_CHARS = 128
"""A partition value as written in the data: longer ones are refused, not truncated (two values
that share a prefix must never share a model)."""
DEFAULT_MAX_PARTITIONS = 20_000
_SEGMENT = re.compile(r"[A-Za-z0-9_.~%-]+=[A-Za-z0-9_.~%-]+")


@dataclass(frozen=True)
class PartitionName:
    """A parsed partition model name: its fleet and the (column, value) pairs, in spec order."""

    fleet: str
    values: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return partition_name(self.fleet, dict(self.values))


def encode(text: str) -> str:
    return quote(text, safe="")


def value_text(value: object) -> str:
    """A partition value as text, the same for the value read from Parquet, from a JSON row and
    from a V2 tensor: integral floats lose their `.0` (a route 42 is `42` whether the column was
    read as int64 or float64), booleans are `true`/`false`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise InvalidInput(f"partition value {value!r} is not a finite number")
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="strict")
    text = str(value)
    if not text:
        raise InvalidInput("partition value is empty")
    if len(text) > MAX_VALUE_CHARS:
        raise InvalidInput(
            f"partition value {shown(text)} is longer than {MAX_VALUE_CHARS} characters"
        )
    return text


def partition_name(fleet: str, values: Mapping[str, object]) -> str:
    """`FLEET/COLUMN=VALUE[/COLUMN=VALUE...]` with column and value percent-encoded."""
    check_name("fleet", fleet)
    if not values:
        raise InvalidInput(f"fleet {fleet}: a partition needs at least one column value")
    segments = [f"{encode(col)}={encode(value_text(val))}" for col, val in values.items()]
    name = "/".join([fleet, *segments])
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(
            f"partition model name {shown(name)} is longer than {MAX_NAME_CHARS} characters"
        )
    return name


def parse(name: str) -> PartitionName | None:
    """The fleet and values of a partition model name; None for a plain model name; InvalidInput
    for anything else (a name with '/' that is not a well-formed partition name)."""
    if "/" not in name:
        return None
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"model name {shown(name)} is longer than {MAX_NAME_CHARS} characters")
    fleet, *segments = name.split("/")
    if (
        not is_name(fleet)
        or len(segments) > MAX_PARTITION_COLUMNS
        or not all(_SEGMENT.fullmatch(s) for s in segments)
    ):
        raise InvalidInput(
            f"model name {shown(name)} is invalid: a partition model is FLEET/COLUMN=VALUE "
            "(a plain model name, then up to 4 segments, column and value percent-encoded)"
        )
    pairs = []
    for segment in segments:
        column, value = segment.split("=")
        decoded = unquote(column, errors="strict"), unquote(value, errors="strict")
        if encode(decoded[0]) != column or encode(decoded[1]) != value:
            # why: one partition, one name; '%41' and 'A' must not be two models
            raise InvalidInput(
                f"model name {shown(name)}: segment {shown(segment)} is not in canonical "
                f"encoding (write {encode(decoded[0])}={encode(decoded[1])})"
            )
        pairs.append(decoded)
    return PartitionName(fleet, tuple(pairs))


def check_model_name(name: str) -> str:
    """Return `name` if it is a valid plain or partition model name, else raise InvalidInput."""
    if "/" in name:
        parse(name)
        return name
    return check_name("model", name)


def fleet_of(name: str) -> str:
    """The fleet a model name belongs to: itself for a plain name."""
    parsed = parse(name)
    return parsed.fleet if parsed else name


def check_partition_by(columns: Sequence[str], target: str) -> None:
    """InvalidInput naming the problem when a spec's `partition_by` cannot be used."""
    if len(columns) > MAX_PARTITION_COLUMNS:
        raise InvalidInput(
            f"spec field 'partition_by' lists {len(columns)} columns; the limit is "
            f"{MAX_PARTITION_COLUMNS}"
        )
    if len(set(columns)) != len(columns):
        raise InvalidInput("spec field 'partition_by' lists a column twice")
    if target in columns:
        raise InvalidInput(
            f"spec field 'partition_by': the target {target!r} cannot be a partition column"
        )


def partition_keys(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Each row's partition model suffix (`COLUMN=VALUE/...`, encoded), or "" for a row with a
    missing partition value (it trains only the global model)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInput(
            f"partition column {missing[0]!r} is not in the data; columns: "
            f"{list(frame.columns)[:20]}"
        )
    keys = pd.Series("", index=frame.index, dtype=object)
    present = frame[list(columns)].notna().all(axis=1)
    parts = []
    for column in columns:
        texts = frame.loc[present, column].map(_safe_value_text)
        parts.append(encode(column) + "=" + texts.map(lambda t: encode(t) if t else ""))
    if parts:
        joined = parts[0]
        for part in parts[1:]:
            joined = joined + "/" + part
        valid = ~joined.str.contains("=$|=/", regex=True)
        keys.loc[joined.index[valid]] = joined[valid]
    return keys


def _safe_value_text(value: object) -> str:
    try:
        return value_text(value)
    except (InvalidInput, UnicodeDecodeError):
        return ""


def count_partitions(keys: Iterable[str], column_names: Sequence[str], limit: int) -> int:
    """The number of distinct partitions; TooLarge naming the columns and the count above
    `limit` (DRIFTLOOP_TRAINING_MAX_PARTITIONS), before any model is created."""
    distinct = {k for k in keys if k}
    if len(distinct) > limit:
        raise TooLarge(
            f"partition_by {list(column_names)} has {len(distinct)} distinct values in the "
            f"curated data; the limit is {limit} (DRIFTLOOP_TRAINING_MAX_PARTITIONS): partition "
            "by a coarser column or raise the limit"
        )
    return len(distinct)
