"""Validation's protobuf conversions: domain -> message -> wire bytes -> message keeps every field,
schemas come back equal, and a RecordBatch envelope decodes to the batch it carries (or is
refused saying why)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.validation.v1 import validation_pb2
from driftloop.services.validation.adapters import pb
from driftloop.services.validation.core import schema as schemas
from driftloop.services.validation.core.batch_checks import BatchFlag
from driftloop.services.validation.core.catalog import DatasetSummary
from driftloop.services.validation.core.outcomes import (
    CuratedBatch,
    CuratedRows,
    DatasetVersioned,
    RejectedRow,
    RejectedRows,
)
from driftloop.services.validation.core.pipeline import RawBatch
from driftloop.services.validation.core.report import QualityReport
from driftloop.services.validation.core.schema import ColumnSpec
from driftloop.shared.bus import envelope
from driftloop.shared.errors import InvalidInput
from driftloop.shared.records import table_to_ipc

pytestmark = pytest.mark.unit


def over_the_wire(message):  # type: ignore[no-untyped-def]
    return type(message).FromString(message.SerializeToString())


def test_a_schema_survives_the_wire() -> None:
    schema = schemas.declare(
        "d",
        [
            ColumnSpec("id", "string", required=True, unique=True),
            ColumnSpec("x", "float", min=-1.5),
            ColumnSpec("n", "int", max=9),
            ColumnSpec("c", "string", categories=("a", "b")),
        ],
    )
    message = over_the_wire(pb.schema_to_pb(schema))
    assert (message.origin, message.schema_hash) == ("declared", schema.schema_hash)
    assert not message.columns[1].HasField("max") and not message.columns[2].HasField("min")
    assert schemas.declare(message.dataset, pb.columns_from_pb(message)) == schema


def test_summaries_and_quality_reports_keep_every_field() -> None:
    summary = over_the_wire(pb.summary_to_pb(DatasetSummary("d", 3, 120, rows_rejected=4)))
    assert (summary.dataset, summary.manifest_version, summary.curated_rows) == ("d", 3, 120)
    flag = BatchFlag("b1", "x", "constant_column", "every value is 1")
    report = QualityReport(
        dataset="d",
        manifest_version=3,
        curated_rows=120,
        manifest_rows_rejected=4,
        rows_accepted=100,
        rows_rejected=5,
        batches=7,
        rejection_reasons={"out of range": 5, "unknown column 'z'": 2},
        flags=(flag,),
    )
    message = over_the_wire(pb.quality_report_to_pb(report))
    assert isinstance(message, validation_pb2.QualityReport)
    assert (
        QualityReport(
            dataset=message.dataset,
            manifest_version=message.manifest_version,
            curated_rows=message.curated_rows,
            manifest_rows_rejected=message.manifest_rows_rejected,
            rows_accepted=message.rows_accepted,
            rows_rejected=message.rows_rejected,
            batches=message.batches,
            rejection_reasons=dict(message.rejection_reasons),
            flags=tuple(BatchFlag(f.batch_id, f.column, f.check, f.detail) for f in message.flags),
        )
        == report
    )


def record_batch(**fields: object) -> envelope.Envelope:
    return envelope.new_event("test", events_pb2.RecordBatch(**fields))  # type: ignore[arg-type]


def test_a_record_batch_envelope_decodes_to_its_batch() -> None:
    table = pa.table({"x": [1, 2], "s": ["a", None]})
    event = over_the_wire(
        record_batch(dataset="d", batch_id="b1", arrow_ipc=table_to_ipc(table), source="grpc")
    )
    batch = pb.raw_batch_from_event(event)
    assert batch == RawBatch("d", "b1", batch.table, "grpc")
    assert batch.table.equals(table)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (envelope.new_event("test", events_pb2.LabelBatch(model="m")), "expected a RecordBatch"),
        (record_batch(dataset="a/b", batch_id="b1"), "dataset name"),
        (record_batch(dataset="d"), "has no batch_id"),
    ],
)
def test_a_wrong_envelope_is_refused_saying_why(event: envelope.Envelope, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        pb.raw_batch_from_event(event)


def test_published_events_keep_every_field() -> None:
    curated = CuratedRows(
        dataset="d",
        manifest_version=2,
        file_key="curated/d/date=2024-01-01/b1.parquet",
        sha256="ab" * 32,
        row_count=3,
        byte_size=4,
        parquet=b"PAR1",
        batches=(CuratedBatch("b1", 2, "grpc"), CuratedBatch("b0", 1, "")),
        schema_hash="cd" * 32,
        cause=0,
    )
    message = over_the_wire(pb.curated_rows_to_pb(curated))
    assert curated == CuratedRows(
        dataset=message.dataset,
        manifest_version=message.manifest_version,
        file_key=message.file_key,
        sha256=message.sha256,
        row_count=message.row_count,
        byte_size=message.byte_size,
        parquet=message.parquet,
        batches=tuple(CuratedBatch(b.batch_id, b.rows, b.source) for b in message.batches),
        schema_hash=message.schema_hash,
        cause=0,
    )
    rejected = RejectedRows("d", "b1", (RejectedRow(1, "too big", '{"x": 9}'),), cause=0)
    message = over_the_wire(pb.rejected_rows_to_pb(rejected))
    rows = tuple(RejectedRow(r.row_index, r.reason, r.row_json) for r in message.rows)
    assert RejectedRows(message.dataset, message.batch_id, rows, cause=0) == rejected
    versioned = DatasetVersioned("d", 2, 30, "manifests/d/v2.json", cause=1)
    message = over_the_wire(pb.dataset_versioned_to_pb(versioned))
    assert versioned == DatasetVersioned(
        message.dataset, message.manifest_version, message.total_rows, message.manifest_key, 1
    )
