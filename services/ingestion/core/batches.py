"""Ingestion core: turn incoming rows (row dicts, Arrow IPC or JSON messages) into stamped batches.

Pure domain logic: no Kafka or gRPC here. The adapters publish the `RowBatch`es this returns.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from driftloop.shared.errors import InvalidInput, TooLarge
from driftloop.shared.names import check_name
from driftloop.shared.records import ipc_to_table, rows_to_table

# why: the same name as driftloop.shared.manifest.INGESTED_AT (a unit test keeps them equal);
# importing manifest here would pull the object store client (minio) into a pure core.
INGESTED_AT = "_ingested_at"
MAX_BATCH_ROWS = 5000
"""Contract: no record batch on driftloop.records.raw holds more rows than this."""
MAX_CLIENT_BATCH_ID = 100
MAX_ROWS_PER_REQUEST = 100_000
MAX_COLUMNS = 1000


@dataclass(frozen=True)
class Limits:
    """Most rows and columns one request (or one JSON-topic message) may hold."""

    max_rows: int = MAX_ROWS_PER_REQUEST
    max_columns: int = MAX_COLUMNS

    def check_rows(self, dataset: str, count: int) -> None:
        if count > self.max_rows:
            raise TooLarge(
                f"request for dataset {dataset!r} holds {count:,} rows, over the limit of "
                f"{self.max_rows:,} (setting DRIFTLOOP_INGESTION_MAX_ROWS_PER_REQUEST): "
                "split it into smaller requests"
            )

    def check_columns(self, dataset: str, count: int) -> None:
        if count > self.max_columns:
            raise TooLarge(
                f"request for dataset {dataset!r} holds {count:,} columns, over the limit of "
                f"{self.max_columns:,} (setting DRIFTLOOP_INGESTION_MAX_COLUMNS)"
            )

    def check_row_dicts(self, dataset: str, rows: list[dict[str, Any]]) -> None:
        """Check row dicts before they are converted, so an oversized request costs little."""
        self.check_rows(dataset, len(rows))
        names: set[str] = set()
        for row in rows:
            names.update(row)
            if len(names) > self.max_columns:
                self.check_columns(dataset, len(names))


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class RowBatch:
    """One micro-batch of one dataset, ready to publish to driftloop.records.raw."""

    dataset: str
    batch_id: str
    table: pa.Table

    @property
    def row_count(self) -> int:
        return int(self.table.num_rows)


@dataclass(frozen=True)
class RowsRequest:
    """One request's rows as the client sent them: row dicts or one Arrow IPC stream."""

    dataset: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    arrow_ipc: bytes = b""
    batch_id: str = ""
    """The client's id for these rows (empty: fresh ids); see `batch_ids`."""


@dataclass
class Ingested:
    """What one request (or a whole stream of them) published: rows and batch ids, in order."""

    rows: int = 0
    batch_ids: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, batches: list[RowBatch]) -> Ingested:
        ingested = cls()
        ingested.add(batches)
        return ingested

    def add(self, batches: list[RowBatch]) -> None:
        # why: ids only; holding the batches would keep every row of a stream in memory
        self.rows += sum(b.row_count for b in batches)
        self.batch_ids.extend(b.batch_id for b in batches)


@dataclass(frozen=True)
class JsonMessage:
    """One message of a public JSON topic, where the broker delivered it from."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def request_table(
    dataset: str,
    rows: list[dict[str, Any]] | None,
    arrow_ipc: bytes | None,
    limits: Limits = DEFAULT_LIMITS,
) -> pa.Table:
    """The rows of one request as a table: exactly one of `rows` or `arrow_ipc` must be given.
    Raises TooLarge past `limits`."""
    check_name("dataset", dataset)
    if rows and arrow_ipc:
        raise InvalidInput(
            f"request for dataset {dataset!r} has both rows and arrow_ipc: send one or the other"
        )
    if not rows and not arrow_ipc:
        raise InvalidInput(
            f"request for dataset {dataset!r} has no rows: fill `rows` or `arrow_ipc`"
        )
    if rows:
        limits.check_row_dicts(dataset, rows)
    try:
        table = rows_to_table(rows) if rows else ipc_to_table(arrow_ipc or b"")
    except OverflowError as exc:  # e.g. an integer beyond 64 bits in a row
        raise InvalidInput(
            f"request for dataset {dataset!r}: a value is out of range: {exc}"
        ) from exc
    limits.check_rows(dataset, table.num_rows)
    limits.check_columns(dataset, table.num_columns)
    if table.num_rows == 0:
        raise InvalidInput(f"request for dataset {dataset!r} holds zero rows")
    names = table.column_names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InvalidInput(f"column names appear more than once: {duplicated}")
    if any(not n for n in names):
        raise InvalidInput("a column has an empty name")
    return table


def stamp(table: pa.Table, now: float) -> pa.Table:
    """Add (or overwrite) the `_ingested_at` column with `now`, in float epoch seconds."""
    # why: from_buffers over a numpy buffer; pa.array(...) would import pandas (~0.3 s of CPU)
    # on a service's first request, which the Arrow fast path otherwise never needs
    values = np.full(table.num_rows, now, dtype=np.float64)
    column = pa.Array.from_buffers(pa.float64(), table.num_rows, [None, pa.py_buffer(values)])
    if INGESTED_AT in table.column_names:
        return table.set_column(table.column_names.index(INGESTED_AT), INGESTED_AT, column)
    return table.append_column(INGESTED_AT, column)


def split(table: pa.Table, batch_rows: int) -> list[pa.Table]:
    """Slices of at most `batch_rows` rows (zero-copy), in order."""
    if not 1 <= batch_rows <= MAX_BATCH_ROWS:
        raise ValueError(f"batch_rows must be within 1..{MAX_BATCH_ROWS}, got {batch_rows}")
    return [table.slice(start, batch_rows) for start in range(0, table.num_rows, batch_rows)]


def make_batches(
    dataset: str,
    rows: list[dict[str, Any]] | None = None,
    arrow_ipc: bytes | None = None,
    *,
    batch_rows: int = MAX_BATCH_ROWS,
    now: float | None = None,
    batch_id: str = "",
    limits: Limits = DEFAULT_LIMITS,
) -> list[RowBatch]:
    """Convert, stamp and split one request's rows into batches.

    Batch ids are fresh uuid4s, or derived from the client's `batch_id` (the id itself for a
    single batch, "<id>.<n>" for several) so that a retried request is curated only once.
    Raises TooLarge when the request holds more rows or columns than `limits` allow."""
    table = request_table(dataset, rows, arrow_ipc, limits)
    table = stamp(table, time.time() if now is None else now)
    parts = split(table, batch_rows)
    ids = batch_ids(batch_id, len(parts))
    return [RowBatch(dataset, b, part) for b, part in zip(ids, parts, strict=True)]


def request_batches(
    request: RowsRequest, *, batch_rows: int, limits: Limits = DEFAULT_LIMITS
) -> list[RowBatch]:
    """`make_batches` of one client request, stamped now."""
    return make_batches(
        request.dataset,
        rows=request.rows,
        arrow_ipc=request.arrow_ipc,
        batch_rows=batch_rows,
        batch_id=request.batch_id,
        limits=limits,
    )


def batch_ids(client_id: str, count: int) -> list[str]:
    """`count` batch ids: from a client-chosen id when given, else fresh uuid4 hex strings."""
    if not client_id:
        return [uuid.uuid4().hex for _ in range(count)]
    check_name("batch_id", client_id)
    if len(client_id) > MAX_CLIENT_BATCH_ID:
        raise InvalidInput(f"batch_id is longer than {MAX_CLIENT_BATCH_ID} characters")
    return [client_id] if count == 1 else [f"{client_id}.{i}" for i in range(count)]


def parse_json_message(key: bytes | None, value: bytes | None) -> tuple[str, list[dict[str, Any]]]:
    """Read one message of the public JSON topic: key = dataset name, value = a JSON object or an
    array of objects. Raises InvalidInput saying what is wrong with the message."""
    if not key:
        raise InvalidInput("message has no key: the key must be the dataset name (UTF-8)")
    try:
        dataset = key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"message key is not UTF-8 text: {exc}") from exc
    check_name("dataset", dataset)
    if not value:
        raise InvalidInput(f"message for dataset {dataset!r} has an empty value")
    try:
        parsed = loads_json(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"message for dataset {dataset!r} is not valid JSON: {exc}") from exc
    if isinstance(parsed, dict):
        return dataset, [parsed]
    if not isinstance(parsed, list):
        raise InvalidInput(
            f"message for dataset {dataset!r} is a JSON {_json_kind(parsed)}: "
            "expected an object or an array of objects"
        )
    if not parsed:
        raise InvalidInput(f"message for dataset {dataset!r} is an empty array: no rows")
    for i, item in enumerate(parsed):
        if not isinstance(item, dict):
            raise InvalidInput(
                f"message for dataset {dataset!r}: element {i} of the array is a JSON "
                f"{_json_kind(item)}, expected an object"
            )
    return dataset, parsed


_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def loads_json(value: bytes) -> Any:
    """Parse a message's JSON: UTF-8 only (RFC 8259), with no byte-order mark; anything else
    raises UnicodeDecodeError saying so (callers refuse the message as not valid JSON, and the
    consumer dead-letters it with that reason).

    orjson first (~4x faster than the standard library on row messages, the JSON topic's main
    cost); what it refuses goes to the standard library, which decides and words the error: it
    also reads NaN and Infinity, which Python's json.dumps writes (they become nulls
    downstream). The standard library is given text decoded as strict UTF-8, never bytes,
    because from bytes it would detect UTF-16 and UTF-32 and accept them."""
    bom = next((b for b in _BOMS if value.startswith(b)), None)
    if bom is not None:
        raise UnicodeDecodeError(
            "utf-8", value, 0, len(bom), "a byte-order mark; JSON on the wire is UTF-8 without one"
        )
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.loads(value.decode("utf-8"))


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
