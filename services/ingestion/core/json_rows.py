"""Rows of the public JSON topic driftloop.ingest.json: a message read into a window piece (key =
dataset, value = an object or an array of objects), and a cut bundle turned into RowBatches.

Pure domain logic: no Kafka here. Windows (core/windows.py) decide which messages share a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from driftloop.services.ingestion.core.batches import (
    DEFAULT_LIMITS,
    MAX_BATCH_ROWS,
    JsonMessage,
    Limits,
    RowBatch,
    batch_ids,
    parse_json_message,
    request_table,
    split,
    stamp,
)
from driftloop.services.ingestion.core.windows import Bundle, Piece, Refused
from driftloop.shared.errors import InvalidInput
from driftloop.shared.records import rows_to_table

Row = dict[str, Any]


def row_pieces(message: JsonMessage, limits: Limits = DEFAULT_LIMITS) -> list[Piece[Row]]:
    """Read one message into its dataset's piece. Raises InvalidInput (TooLarge past `limits`)
    saying what is wrong with the message, exactly as a request of these rows would."""
    dataset, rows = parse_json_message(message.key, message.value)
    limits.check_rows(dataset, len(rows))
    names: set[str] = set()
    for row in rows:
        names.update(row)
        if len(names) > limits.max_columns:
            limits.check_columns(dataset, len(names))
    if not names:
        raise InvalidInput(f"request for dataset {dataset!r} holds zero rows")
    if "" in names:
        raise InvalidInput("a column has an empty name")
    return [Piece(dataset, rows, frozenset(names))]


@dataclass(frozen=True)
class BundleBatches:
    """The RowBatches of one bundle, and the messages refused while converting it."""

    batches: list[RowBatch]
    refused: list[Refused]


def bundle_batches(
    bundle: Bundle[Row],
    *,
    now: float,
    batch_rows: int = MAX_BATCH_ROWS,
    limits: Limits = DEFAULT_LIMITS,
) -> BundleBatches:
    """Convert a bundle's rows into one table (columns missing from some rows become nulls),
    stamped `now`, split into batches of `batch_rows` with ids "<bundle id>" or "<id>.<n>".

    Rows whose types cannot share a column (a number here, a string there) are converted
    message by message instead: a message that fails alone is refused with today's reason,
    and consecutive messages whose columns agree share a table. All of it depends only on the
    rows, so a redelivered bundle converts (and is named) the same."""
    refused: list[Refused] = []
    try:
        tables = [rows_to_table(bundle.items)]
    except Exception:  # noqa: BLE001 - whatever failed, the per-message path says who and why
        tables, refused = _per_message_tables(bundle, limits)
    parts = [part for table in tables for part in split(stamp(table, now), batch_rows)]
    ids = batch_ids(bundle.batch_id, len(parts)) if parts else []
    batches = [RowBatch(bundle.group, b, part) for b, part in zip(ids, parts, strict=True)]
    return BundleBatches(batches, refused)


def _per_message_tables(
    bundle: Bundle[Row], limits: Limits
) -> tuple[list[pa.Table], list[Refused]]:
    """Tables of runs of consecutive messages whose schemas unify (an int column meeting a float
    one becomes float; a bool meeting an int starts a new table)."""
    refused: list[Refused] = []
    runs: list[list[pa.Table]] = []
    schema: pa.Schema | None = None
    for message, rows in bundle.parts:
        try:
            table = request_table(bundle.group, rows, None, limits)
        except Exception as exc:  # noqa: BLE001 - a message that fails alone is refused, with why
            refused.append(Refused(message, exc))
            continue
        if schema is not None:
            try:
                schema = pa.unify_schemas([schema, table.schema], promote_options="permissive")
                runs[-1].append(table)
                continue
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                pass  # the types disagree: this message starts the next table
        schema = table.schema
        runs.append([table])
    return [table for run in runs for table in _concat(run)], refused


def _concat(tables: list[pa.Table]) -> list[pa.Table]:
    if len(tables) == 1:
        return tables
    try:
        return [pa.concat_tables(tables, promote_options="permissive").combine_chunks()]
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return tables  # unified schemas that still do not concatenate: one table each
