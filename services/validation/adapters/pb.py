"""Conversions between validation's domain types and protobuf: the API's schemas, summaries and
quality reports, the RecordBatch events it reads, and the events it publishes."""

from __future__ import annotations

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.validation.v1 import validation_pb2
from driftloop.services.validation.core.batch_checks import BatchFlag
from driftloop.services.validation.core.catalog import DatasetSummary
from driftloop.services.validation.core.outcomes import CuratedRows, DatasetVersioned, RejectedRows
from driftloop.services.validation.core.pipeline import RawBatch
from driftloop.services.validation.core.report import QualityReport
from driftloop.services.validation.core.schema import ColumnSpec, DatasetSchema
from driftloop.shared.bus import topics
from driftloop.shared.bus.envelope import Envelope
from driftloop.shared.errors import InvalidInput
from driftloop.shared.names import check_name
from driftloop.shared.records import ipc_to_table


def column_from_pb(column: validation_pb2.ColumnSchema) -> ColumnSpec:
    return ColumnSpec(
        name=column.name,
        type=column.type,
        required=column.required,
        min=column.min if column.HasField("min") else None,
        max=column.max if column.HasField("max") else None,
        categories=tuple(column.categories),
        unique=column.unique,
    )


def columns_from_pb(schema: validation_pb2.DatasetSchema) -> list[ColumnSpec]:
    """The columns a PutSchema request declares (its origin and hash are the server's)."""
    return [column_from_pb(c) for c in schema.columns]


def column_to_pb(column: ColumnSpec) -> validation_pb2.ColumnSchema:
    message = validation_pb2.ColumnSchema(
        name=column.name,
        type=column.type,
        required=column.required,
        categories=list(column.categories),
        unique=column.unique,
    )
    if column.min is not None:
        message.min = column.min
    if column.max is not None:
        message.max = column.max
    return message


def schema_to_pb(schema: DatasetSchema) -> validation_pb2.DatasetSchema:
    return validation_pb2.DatasetSchema(
        dataset=schema.dataset,
        columns=[column_to_pb(c) for c in schema.columns],
        origin=schema.origin,
        schema_hash=schema.schema_hash,
    )


def summary_to_pb(summary: DatasetSummary) -> validation_pb2.DatasetSummary:
    return validation_pb2.DatasetSummary(
        dataset=summary.dataset,
        manifest_version=summary.manifest_version,
        curated_rows=summary.curated_rows,
    )


def flag_to_pb(flag: BatchFlag) -> validation_pb2.BatchFlag:
    return validation_pb2.BatchFlag(
        batch_id=flag.batch_id, column=flag.column, check=flag.check, detail=flag.detail
    )


def quality_report_to_pb(report: QualityReport) -> validation_pb2.QualityReport:
    return validation_pb2.QualityReport(
        dataset=report.dataset,
        manifest_version=report.manifest_version,
        curated_rows=report.curated_rows,
        manifest_rows_rejected=report.manifest_rows_rejected,
        rows_accepted=report.rows_accepted,
        rows_rejected=report.rows_rejected,
        batches=report.batches,
        rejection_reasons=report.rejection_reasons,
        flags=[flag_to_pb(f) for f in report.flags],
    )


def raw_batch_from_event(event: Envelope) -> RawBatch:
    """The RecordBatch an envelope of driftloop.records.raw carries; InvalidInput (the bus
    dead-letters it) when it carries something else, lacks a name or id, or is not Arrow."""
    if event.WhichOneof("payload") != "record_batch":
        raise InvalidInput(f"expected a RecordBatch on {topics.RECORDS_RAW}, got {event.type}")
    batch = event.record_batch
    dataset = check_name("dataset", batch.dataset)
    if not batch.batch_id:
        raise InvalidInput(f"a RecordBatch of dataset {dataset!r} has no batch_id")
    return RawBatch(dataset, batch.batch_id, ipc_to_table(batch.arrow_ipc), batch.source)


def curated_rows_to_pb(curated: CuratedRows) -> events_pb2.CuratedRows:
    return events_pb2.CuratedRows(
        dataset=curated.dataset,
        manifest_version=curated.manifest_version,
        file_key=curated.file_key,
        sha256=curated.sha256,
        row_count=curated.row_count,
        byte_size=curated.byte_size,
        parquet=curated.parquet,
        batches=[
            events_pb2.CuratedBatch(batch_id=b.batch_id, rows=b.rows, source=b.source)
            for b in curated.batches
        ],
        schema_hash=curated.schema_hash,
    )


def rejected_rows_to_pb(rejected: RejectedRows) -> events_pb2.RejectedRows:
    return events_pb2.RejectedRows(
        dataset=rejected.dataset,
        batch_id=rejected.batch_id,
        rows=[
            events_pb2.RejectedRow(row_index=r.row_index, reason=r.reason, row_json=r.row_json)
            for r in rejected.rows
        ],
    )


def dataset_versioned_to_pb(versioned: DatasetVersioned) -> events_pb2.DatasetVersioned:
    return events_pb2.DatasetVersioned(
        dataset=versioned.dataset,
        manifest_version=versioned.manifest_version,
        total_rows=versioned.total_rows,
        manifest_key=versioned.manifest_key,
    )
