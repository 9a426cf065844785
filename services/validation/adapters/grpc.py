"""The validation gRPC servicer: schemas, dataset versions and quality reports.

Converts protobuf to domain types and back; no try/except (the shared interceptor maps errors).
"""

from __future__ import annotations

import asyncio

import grpc

from driftloop.protos.validation.v1 import validation_pb2, validation_pb2_grpc
from driftloop.services.validation.core import schema as schemas
from driftloop.services.validation.core.catalog import SchemaCatalog
from driftloop.services.validation.core.quality import QualityTracker, reason_counts
from driftloop.services.validation.core.schema import ColumnSpec, DatasetSchema
from driftloop.shared.errors import NotFound
from driftloop.shared.names import check_name

SCHEMA_CHANGE_HEADER = "x-driftloop-schema-change"
"""Request metadata: "breaking" lets PutSchema apply an incompatible schema change."""


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return str(value)
    return ""


class ValidationServicer(validation_pb2_grpc.ValidationServiceServicer):
    def __init__(self, catalog: SchemaCatalog, quality: QualityTracker) -> None:
        self._catalog = catalog
        self._quality = quality

    async def ListDatasets(  # noqa: N802 - generated name
        self, request: validation_pb2.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> validation_pb2.ListDatasetsResponse:
        def summaries() -> list[validation_pb2.DatasetSummary]:
            return [
                validation_pb2.DatasetSummary(
                    dataset=s.dataset,
                    manifest_version=s.manifest_version,
                    curated_rows=s.curated_rows,
                )
                for s in map(self._catalog.summary, self._catalog.datasets())
            ]

        return validation_pb2.ListDatasetsResponse(datasets=await asyncio.to_thread(summaries))

    async def GetSchema(  # noqa: N802 - generated name
        self, request: validation_pb2.GetSchemaRequest, context: grpc.aio.ServicerContext
    ) -> validation_pb2.DatasetSchema:
        check_name("dataset", request.dataset)
        return schema_to_pb(await asyncio.to_thread(self._catalog.get, request.dataset))

    async def PutSchema(  # noqa: N802 - generated name
        self, request: validation_pb2.DatasetSchema, context: grpc.aio.ServicerContext
    ) -> validation_pb2.DatasetSchema:
        declared = schemas.declare(request.dataset, [column_from_pb(c) for c in request.columns])
        breaking = _metadata(context, SCHEMA_CHANGE_HEADER) == "breaking"

        def put() -> DatasetSchema:
            try:
                current = self._catalog.get(declared.dataset)
            except NotFound:
                current = None
            if current is not None:
                schemas.check_evolution(current, declared, breaking=breaking)
            return self._catalog.put(declared)

        return schema_to_pb(await asyncio.to_thread(put))

    async def GetQualityReport(  # noqa: N802 - generated name
        self, request: validation_pb2.GetQualityReportRequest, context: grpc.aio.ServicerContext
    ) -> validation_pb2.QualityReport:
        dataset = check_name("dataset", request.dataset)
        quality = self._quality.get(dataset)
        if quality is None and not await asyncio.to_thread(self._catalog.knows, dataset):
            raise NotFound(f"dataset {dataset!r} is unknown: no schema, no curated rows")
        summary = await asyncio.to_thread(self._catalog.summary, dataset)
        report = validation_pb2.QualityReport(
            dataset=dataset,
            manifest_version=summary.manifest_version,
            curated_rows=summary.curated_rows,
            manifest_rows_rejected=summary.rows_rejected,
        )
        if quality is not None:
            report.rows_accepted = quality.rows_accepted
            report.rows_rejected = quality.rows_rejected
            report.batches = quality.batches
            report.rejection_reasons.update(reason_counts(quality))
            report.flags.extend(
                validation_pb2.BatchFlag(
                    batch_id=f.batch_id, column=f.column, check=f.check, detail=f.detail
                )
                for f in quality.flags
            )
        return report


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
