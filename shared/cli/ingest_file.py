"""`driftloop ingest FILE`: stream a CSV or Parquet file to ingestion in Arrow record batches.

The file is read batch by batch (pyarrow's streaming CSV reader, Parquet row groups), so files
larger than memory work; batches travel on one client-streaming IngestStream call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from driftloop.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.shared.errors import InvalidInput
from driftloop.shared.grpc_client import auth_metadata, sync_channel
from driftloop.shared.records import table_to_ipc
from driftloop.shared.settings import CommonSettings

BATCH_ROWS = 5000
MAX_REJECTED_SHOWN = 20


@dataclass(frozen=True)
class RejectedLine:
    """A CSV line that could not be parsed into a row (it was skipped, the rest went on)."""

    line: int | None
    reason: str
    text: str


def record_batches(
    path: Path, batch_rows: int = BATCH_ROWS, rejected: list[RejectedLine] | None = None
) -> Iterator[pa.RecordBatch]:
    """Yield the file's rows in batches of at most `batch_rows`, never the whole file at once.

    A CSV line with the wrong number of fields is skipped and appended to `rejected` with the
    reason; without a `rejected` list it stops the read with InvalidInput."""
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".txt"):
        raise InvalidInput(f"{path}: unknown file type {suffix!r}; use .csv or .parquet")
    return _batches(path, suffix, batch_rows, rejected)


def _batches(
    path: Path, suffix: str, batch_rows: int, rejected: list[RejectedLine] | None
) -> Iterator[pa.RecordBatch]:
    def skip(row: pacsv.InvalidRow) -> str:
        if rejected is None:
            return "error"
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        rejected.append(RejectedLine(row.number, reason, (row.text or "")[:200]))
        return "skip"

    try:
        if suffix in (".parquet", ".pq"):
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
            return
        options = pacsv.ReadOptions(block_size=1 << 20)
        parse = pacsv.ParseOptions(invalid_row_handler=skip)
        with pacsv.open_csv(path, read_options=options, parse_options=parse) as reader:
            for batch in reader:
                for start in range(0, batch.num_rows, batch_rows):
                    yield batch.slice(start, batch_rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"{path}: cannot read: {exc}") from exc


def ingest_file(
    common: CommonSettings,
    path: Path,
    dataset: str,
    rejected: list[RejectedLine] | None = None,
) -> ingestion_pb2.IngestResponse:
    size = path.stat().st_size
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task(f"ingesting {path.name}", total=None, rows=0)
        batches = record_batches(path, rejected=rejected)
        sent = 0
        failure: InvalidInput | None = None

        def requests() -> Iterator[ingestion_pb2.IngestRequest]:
            # why: gRPC hides exceptions raised inside a request iterator behind "Exception
            # iterating requests!"; keep ours and raise it once the call has ended.
            nonlocal sent, failure
            try:
                for batch in batches:
                    sent += batch.num_rows
                    progress.update(task, rows=sent)
                    table = pa.Table.from_batches([batch])
                    yield ingestion_pb2.IngestRequest(
                        dataset=dataset, arrow_ipc=table_to_ipc(table)
                    )
            except InvalidInput as exc:
                failure = exc

        with sync_channel(common, "ingestion") as channel:
            stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
            reply = stub.IngestStream(requests(), metadata=auth_metadata(common), timeout=3600)
        progress.update(task, total=size, completed=size)
    if failure is not None:
        raise InvalidInput(f"{failure} (the {reply.rows_accepted:,} rows before it were ingested)")
    return reply
