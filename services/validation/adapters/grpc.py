"""The validation gRPC servicer: schemas, dataset versions and quality reports.

Converts protobuf to domain types and back; no try/except (the shared interceptor maps errors).
"""

from __future__ import annotations

import asyncio

import grpc

from driftloop.protos.validation.v1 import validation_pb2, validation_pb2_grpc
from driftloop.services.validation.adapters import pb
from driftloop.services.validation.core.catalog import SchemaCatalog
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.services.validation.core.report import quality_report
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
        summaries = await asyncio.to_thread(self._catalog.summaries)
        return validation_pb2.ListDatasetsResponse(
            datasets=[pb.summary_to_pb(s) for s in summaries]
        )

    async def GetSchema(  # noqa: N802 - generated name
        self, request: validation_pb2.GetSchemaRequest, context: grpc.aio.ServicerContext
    ) -> validation_pb2.DatasetSchema:
        check_name("dataset", request.dataset)
        return pb.schema_to_pb(await asyncio.to_thread(self._catalog.get, request.dataset))

    async def PutSchema(  # noqa: N802 - generated name
        self, request: validation_pb2.DatasetSchema, context: grpc.aio.ServicerContext
    ) -> validation_pb2.DatasetSchema:
        columns = pb.columns_from_pb(request)
        breaking = _metadata(context, SCHEMA_CHANGE_HEADER) == "breaking"
        declared = await asyncio.to_thread(
            self._catalog.declare, request.dataset, columns, breaking=breaking
        )
        return pb.schema_to_pb(declared)

    async def GetQualityReport(  # noqa: N802 - generated name
        self, request: validation_pb2.GetQualityReportRequest, context: grpc.aio.ServicerContext
    ) -> validation_pb2.QualityReport:
        report = await quality_report(self._catalog, self._quality, request.dataset)
        return pb.quality_report_to_pb(report)
