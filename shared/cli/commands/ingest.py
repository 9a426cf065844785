"""`driftloop ingest FILE`: stream a CSV or Parquet file to ingestion in Arrow record batches.

The file is read batch by batch (pyarrow's streaming CSV reader, Parquet row groups), so files
larger than memory work; batches travel on one client-streaming IngestStream call. With
`--labels --model NAME` the file holds (request id, label) pairs sent through IngestLabels in
chunks; rows whose id or label is empty are skipped and reported like broken CSV lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.shared.auth import INGEST
from driftloop.shared.errors import InvalidInput
from driftloop.shared.grpc.client import auth_metadata, sync_channel
from driftloop.shared.records import table_to_ipc
from driftloop.shared.settings import CommonSettings

BATCH_ROWS = 5000
LABELS_PER_CALL = 5000
MAX_REJECTED_SHOWN = 20


@dataclass(frozen=True)
class RejectedLine:
    """A CSV line that could not be parsed into a row (it was skipped, the rest went on)."""

    line: int | None
    reason: str
    text: str


def record_batches(
    path: Path,
    batch_rows: int = BATCH_ROWS,
    rejected: list[RejectedLine] | None = None,
    column_types: dict[str, pa.DataType] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield the file's rows in batches of at most `batch_rows`, never the whole file at once.

    A CSV line with the wrong number of fields is skipped and appended to `rejected` with the
    reason; without a `rejected` list it stops the read with InvalidInput. `column_types` fixes
    the type of CSV columns instead of inferring them (ids like "007" stay text)."""
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".txt"):
        raise InvalidInput(f"{path}: unknown file type {suffix!r}; use .csv or .parquet")
    return _batches(path, suffix, batch_rows, rejected, column_types or {})


def _batches(
    path: Path,
    suffix: str,
    batch_rows: int,
    rejected: list[RejectedLine] | None,
    column_types: dict[str, pa.DataType],
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
        convert = pacsv.ConvertOptions(column_types=column_types)
        with pacsv.open_csv(
            path, read_options=options, parse_options=parse, convert_options=convert
        ) as reader:
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
            reply = stub.IngestStream(
                requests(), metadata=auth_metadata(common, INGEST), timeout=3600
            )
        progress.update(task, total=size, completed=size)
    if failure is not None:
        raise InvalidInput(f"{failure} (the {reply.rows_accepted:,} rows before it were ingested)")
    return reply


def label_pairs(
    batch: pa.RecordBatch, id_column: str, label_column: str, rejected: list[RejectedLine]
) -> tuple[list[str], list[str]]:
    """The (request id, label) pairs of one batch as strings; rows with an empty one are
    appended to `rejected` (line unknown: batches do not carry file line numbers)."""
    names = batch.schema.names
    for column in (id_column, label_column):
        if column not in names:
            raise InvalidInput(f"the file has no column {column!r} (it has {names})")
    ids = pc.cast(batch.column(names.index(id_column)), pa.string())
    labels = pc.cast(batch.column(names.index(label_column)), pa.string())
    good = pc.and_(
        pc.fill_null(pc.greater(pc.utf8_length(ids), 0), False),
        pc.fill_null(pc.greater(pc.utf8_length(labels), 0), False),
    )
    if not pc.all(good).as_py():
        for i in pc.indices_nonzero(pc.invert(good)).to_pylist():
            text = f"{ids[i].as_py()},{labels[i].as_py()}"
            rejected.append(RejectedLine(None, "empty request id or label", text))
        ids, labels = ids.filter(good), labels.filter(good)
    return ids.to_pylist(), labels.to_pylist()


def ingest_labels_file(
    common: CommonSettings,
    path: Path,
    model: str,
    *,
    id_column: str = "request_id",
    label_column: str = "label",
    rejected: list[RejectedLine] | None = None,
) -> ingestion_pb2.IngestLabelsResponse:
    """Send the file's labels in IngestLabels calls of at most 5000; the summed response."""
    rejected = [] if rejected is None else rejected
    types = {id_column: pa.string(), label_column: pa.string()}
    total = ingestion_pb2.IngestLabelsResponse()
    with (
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[rows]:,} labels"),
            TimeElapsedColumn(),
        ) as progress,
        sync_channel(common, "ingestion") as channel,
    ):
        task = progress.add_task(f"labelling {model} from {path.name}", total=None, rows=0)
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        for batch in record_batches(path, LABELS_PER_CALL, rejected, column_types=types):
            ids, labels = label_pairs(batch, id_column, label_column, rejected)
            if not ids:
                continue
            reply = stub.IngestLabels(
                ingestion_pb2.IngestLabelsRequest(model=model, request_ids=ids, labels=labels),
                metadata=auth_metadata(common, INGEST),
                timeout=60,
            )
            total.labels_accepted += reply.labels_accepted
            total.batch_ids.extend(reply.batch_ids)
            progress.update(task, rows=total.labels_accepted)
    return total


def ingest_labels_command(
    common: CommonSettings, path: Path, model: str, id_column: str, label_column: str
) -> None:
    """The CLI side of `driftloop ingest FILE --labels --model NAME`: run it and print."""
    import grpc

    from driftloop.shared.cli.app import console, err, fail, rpc_error
    from driftloop.shared.errors import DriftloopError

    if not model:
        fail("--labels needs --model NAME")
    rejected: list[RejectedLine] = []
    try:
        reply = ingest_labels_file(
            common,
            path,
            model,
            id_column=id_column,
            label_column=label_column,
            rejected=rejected,
        )
    except DriftloopError as exc:
        fail(str(exc))
        return
    except grpc.RpcError as exc:
        rpc_error(exc)
        return
    console.print(
        f"{reply.labels_accepted:,} labels published for model {model} "
        f"in {len(reply.batch_ids)} batches"
    )
    for line in rejected[:MAX_REJECTED_SHOWN]:
        where = f"line {line.line}" if line.line else "row"
        err.print(f"rejected {where}: {line.reason}: {line.text!r}")
    if rejected:
        err.print(f"{len(rejected):,} rows rejected (not sent)")
