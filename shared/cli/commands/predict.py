"""`driftloop predict FILE --model NAME -o OUT.parquet`: score a CSV/Parquet file through
serving's V2 ModelInfer in streamed chunks, writing the input columns plus predictions (a
classifier's class and probabilities, or a regressor's number).

Neither file is ever whole in memory: the input is read batch by batch, each batch is one
ModelInfer call (one raw [N] input per feature), and the output Parquet grows batch by batch.
A few calls are kept in flight so serving scores one chunk while the next is read and sent.
"""

from __future__ import annotations

import collections
import json
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from driftloop.shared.errors import DriftloopError, InvalidInput, NotFound, Unavailable
from driftloop.shared.grpc.client import sync_channel
from driftloop.shared.settings import CommonSettings

PREDICTION = "prediction"
PROBABILITY_PREFIX = "probability_"
if TYPE_CHECKING:  # pyarrow and numpy load when the command runs, not with every CLI call
    import numpy as np
    import pyarrow as pa

IN_FLIGHT = 3
CALL_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ModelInputs:
    """What ModelMetadata says the model takes: (feature name, V2 datatype) in order."""

    model: str
    version: str
    features: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PredictSummary:
    rows: int
    chunks: int
    versions: tuple[str, ...]
    """The versions that answered (more than one if a swap happened during the run)."""


def model_inputs(stub: Any, model: str, version: str) -> ModelInputs:
    try:
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version), timeout=30)
    except grpc.RpcError as exc:
        raise _rpc_error(exc, model) from exc
    return ModelInputs(model, version, tuple((t.name, t.datatype) for t in meta.inputs))


def check_columns(schema: pa.Schema, inputs: ModelInputs) -> None:
    missing = [name for name, _ in inputs.features if name not in schema.names]
    if missing:
        raise InvalidInput(
            f"the file lacks feature column(s) {missing} that model {inputs.model!r} needs "
            f"(it has {schema.names})"
        )
    clash = [n for n in schema.names if n == PREDICTION or n.startswith(PROBABILITY_PREFIX)]
    if clash:
        raise InvalidInput(f"the file already has output column(s) {clash}: rename them")


def build_request(batch: pa.RecordBatch, inputs: ModelInputs, request_id: str) -> Any:
    """One raw [N] input per feature: FP64 little-endian, or length-prefixed UTF-8 (BYTES)."""
    request = pb.ModelInferRequest(
        model_name=inputs.model, model_version=inputs.version, id=request_id
    )
    n = batch.num_rows
    for name, datatype in inputs.features:
        column = batch.column(batch.schema.get_field_index(name))
        request.inputs.add(name=name, datatype=datatype, shape=[n])
        request.raw_input_contents.append(_raw(name, datatype, column))
    return request


def _raw(name: str, datatype: str, column: pa.Array) -> bytes:
    import pyarrow as pa
    import pyarrow.compute as pc

    if datatype == "BYTES":
        values = pc.fill_null(pc.cast(column, pa.string()), "").to_pylist()
        return b"".join(struct.pack("<I", len(v)) + v for v in (s.encode() for s in values))
    try:
        numbers = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(f"column {name!r} must be numeric for the model: {exc}") from exc
    return numbers.to_numpy(zero_copy_only=False).astype("<f8", copy=False).tobytes()


def parse_response(reply: Any, rows: int) -> tuple[list[str] | np.ndarray, np.ndarray, list[str]]:
    """(predictions, probabilities [rows, C], classes) from a raw or typed ModelInferResponse:
    a classifier's labels, or a regressor's numbers (float64 [rows], with [rows, 0]
    probabilities and no classes)."""
    import numpy as np

    by_name = {o.name: i for i, o in enumerate(reply.outputs)}
    raw = list(reply.raw_output_contents)
    if PREDICTION in by_name:  # a regressor: one FP64 number per row
        at = by_name[PREDICTION]
        if raw:
            numbers = np.frombuffer(raw[at], dtype="<f8").astype(np.float64)
        else:
            numbers = np.asarray(reply.outputs[at].contents.fp64_contents, dtype=np.float64)
        if len(numbers) != rows:
            raise InvalidInput(f"serving answered {len(numbers)} predictions for {rows} rows")
        return numbers, np.empty((rows, 0), dtype=np.float64), []
    if "label" not in by_name or "probabilities" not in by_name:
        raise InvalidInput(
            f"serving answered outputs {sorted(by_name)}: expected label and probabilities "
            "(a classifier) or prediction (a regressor)"
        )
    label_out = reply.outputs[by_name["label"]]
    proba_out = reply.outputs[by_name["probabilities"]]
    if raw:
        labels = _split(raw[by_name["label"]])
        proba = np.frombuffer(raw[by_name["probabilities"]], dtype="<f8")
    else:
        labels = [bytes(v).decode() for v in label_out.contents.bytes_contents]
        proba = np.asarray(proba_out.contents.fp64_contents, dtype=np.float64)
    width = int(proba_out.shape[1]) if len(proba_out.shape) == 2 else 1
    proba = proba.reshape(rows, width)
    if len(labels) != rows:
        raise InvalidInput(f"serving answered {len(labels)} labels for {rows} rows")
    params = proba_out.parameters
    classes = json.loads(params["classes"].string_param) if "classes" in params else []
    if len(classes) != width:
        classes = [str(i) for i in range(width)]
    return labels, proba, classes


def _split(raw: bytes) -> list[str]:
    out, pos = [], 0
    while pos < len(raw):
        (length,) = struct.unpack_from("<I", raw, pos)
        out.append(raw[pos + 4 : pos + 4 + length].decode())
        pos += 4 + length
    return out


def output_batch(
    batch: pa.RecordBatch,
    predictions: list[str] | np.ndarray,
    proba: np.ndarray,
    classes: list[str],
) -> pa.RecordBatch:
    """The input columns, then `prediction` (a class as text, or a regressor's float64) and
    one `probability_<class>` column per class."""
    import pyarrow as pa

    kind = pa.string() if isinstance(predictions, list) else pa.float64()
    arrays = [*batch.columns, pa.array(predictions, type=kind)]
    names = [*batch.schema.names, PREDICTION]
    for j, cls in enumerate(classes):
        arrays.append(pa.array(proba[:, j], type=pa.float64()))
        names.append(f"{PROBABILITY_PREFIX}{cls}")
    return pa.RecordBatch.from_arrays(arrays, names=names)


def predict_file(
    common: CommonSettings,
    path: Path,
    out: Path,
    model: str,
    *,
    version: str = "",
    batch_rows: int = 10_000,
    progress: Progress | None = None,
) -> PredictSummary:
    """Score `path` into `out`; raises DriftloopError with what to fix. `out` appears only
    when every row was scored (it is written as a .partial file first)."""
    import pyarrow as pa

    from driftloop.shared.cli.commands.ingest import record_batches

    partial = out.with_name(out.name + ".partial")
    with sync_channel(common, "serving") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        inputs = model_inputs(stub, model, version)
        types = {n: pa.string() if d == "BYTES" else pa.float64() for n, d in inputs.features}
        batches = record_batches(path, batch_rows, column_types=types)
        task = None
        if progress is not None:
            task = progress.add_task(f"scoring {path.name}", total=_row_count(path), rows=0)
        try:
            summary = _score_all(stub, inputs, batches, partial, progress, task)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    partial.replace(out)
    return summary


def _row_count(path: Path) -> int | None:
    """Rows of a Parquet file from its footer; None for CSV (unknown until read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix.lower() not in (".parquet", ".pq"):
        return None
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"{path}: cannot read: {exc}") from exc


def _score_all(
    stub: Any,
    inputs: ModelInputs,
    batches: Iterator[pa.RecordBatch],
    out: Path,
    progress: Progress | None,
    task: Any,
) -> PredictSummary:
    import pyarrow.parquet as pq

    run = uuid.uuid4().hex[:12]
    pending: collections.deque[tuple[pa.RecordBatch, Any]] = collections.deque()
    writer: Any = None  # pq.ParquetWriter once the first answer fixed the schema
    rows = chunks = 0
    versions: dict[str, None] = {}

    def drain_one() -> None:
        nonlocal writer, rows
        batch, future = pending.popleft()
        try:
            reply = future.result()
        except grpc.RpcError as exc:
            raise _rpc_error(exc, inputs.model) from exc
        versions[reply.model_version] = None
        result = output_batch(batch, *parse_response(reply, batch.num_rows))
        if writer is None:
            writer = pq.ParquetWriter(out, result.schema)
        elif not result.schema.equals(writer.schema):
            # a swap during the run to a version answering otherwise (a regressor after a
            # classifier, other classes): one file cannot hold both
            first = next(iter(versions))
            raise InvalidInput(
                f"model {inputs.model!r} changed its answers during the run: version {first} "
                f"gave columns {writer.schema.names[batch.num_columns :]}, version "
                f"{reply.model_version} gives {result.schema.names[batch.num_columns :]}; "
                "score the file again (or pin --version)"
            )
        writer.write_batch(result)
        rows += batch.num_rows
        if progress is not None:
            progress.update(task, advance=batch.num_rows, rows=rows)

    try:
        for batch in batches:
            if chunks == 0:
                check_columns(batch.schema, inputs)
            request = build_request(batch, inputs, f"predict-{run}-{chunks}")
            pending.append((batch, stub.ModelInfer.future(request, timeout=CALL_TIMEOUT_S)))
            chunks += 1
            if len(pending) >= IN_FLIGHT:
                drain_one()
        while pending:
            drain_one()
    finally:
        for _, future in pending:
            future.cancel()
        if writer is not None:
            writer.close()
    if writer is None:
        raise InvalidInput("the file has no rows: nothing was scored")
    return PredictSummary(rows, chunks, tuple(versions))


def _rpc_error(exc: grpc.RpcError, model: str) -> DriftloopError:
    code = exc.code()  # type: ignore[attr-defined]
    details = exc.details()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"model {model!r}: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"serving is unreachable ({code.name}: {details}): is the stack up?")
    return InvalidInput(f"{code.name}: {details}")


def command(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file.", exists=True, dir_okay=False)],
    model: Annotated[str, typer.Option(help="Model to score with.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write.")],
    version: Annotated[str, typer.Option(help="Loaded version (default: production).")] = "",
    batch_rows: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per call.")] = 10_000,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="State directory of the stack.")
    ] = None,
) -> None:
    """Score a CSV/Parquet file with a served model (streamed; larger than memory works)."""
    from driftloop.shared.cli.stack import embedded as stack

    console, err = Console(), Console(stderr=True)
    common = CommonSettings(data_dir=data_dir) if data_dir else CommonSettings()
    common = stack.settings_from_endpoints(common)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err) as progress:
            summary = predict_file(
                common,
                file,
                output,
                model,
                version=version,
                batch_rows=batch_rows,
                progress=progress,
            )
    except DriftloopError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"{summary.rows:,} rows scored by {model} version {', '.join(summary.versions)} "
        f"in {summary.chunks} calls -> {output}"
    )
