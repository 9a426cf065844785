"""Conversions between ingestion's domain types and protobuf: the API's requests and responses,
and the RecordBatch and LabelBatch events it publishes."""

from __future__ import annotations

from google.protobuf import json_format

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.ingestion.v1 import ingestion_pb2
from driftloop.services.ingestion.core.batches import Ingested, Limits, RowBatch, RowsRequest
from driftloop.services.ingestion.core.labels import LabelChunk, LabelsRequest
from driftloop.shared.records import table_to_ipc


def rows_request_from_pb(request: ingestion_pb2.IngestRequest, limits: Limits) -> RowsRequest:
    """The request's rows; TooLarge past `limits.max_rows`."""
    # why: refuse an oversized request before converting every protobuf row
    limits.check_rows(request.dataset, len(request.rows))
    return RowsRequest(
        dataset=request.dataset,
        rows=[json_format.MessageToDict(row) for row in request.rows],
        arrow_ipc=request.arrow_ipc,
        batch_id=request.batch_id,
    )


def ingested_to_pb(ingested: Ingested) -> ingestion_pb2.IngestResponse:
    return ingestion_pb2.IngestResponse(rows_accepted=ingested.rows, batch_ids=ingested.batch_ids)


def labels_request_from_pb(
    request: ingestion_pb2.IngestLabelsRequest, max_labels: int
) -> LabelsRequest:
    """The request's pairs, at most `max_labels` + 1 of each: enough for the core to refuse an
    oversized request (TooLarge) before every pair is copied out of the protobuf."""
    return LabelsRequest(
        model=request.model,
        request_ids=list(request.request_ids[: max_labels + 1]),
        labels=list(request.labels[: max_labels + 1]),
        batch_id=request.batch_id,
    )


def labels_response_to_pb(chunks: list[LabelChunk]) -> ingestion_pb2.IngestLabelsResponse:
    return ingestion_pb2.IngestLabelsResponse(
        labels_accepted=sum(len(c.labels) for c in chunks),
        batch_ids=[c.batch_id for c in chunks],
    )


def record_batch_to_pb(batch: RowBatch, source: str) -> events_pb2.RecordBatch:
    return events_pb2.RecordBatch(
        dataset=batch.dataset,
        batch_id=batch.batch_id,
        arrow_ipc=table_to_ipc(batch.table),
        row_count=batch.row_count,
        source=source,
    )


def label_batch_to_pb(chunk: LabelChunk) -> events_pb2.LabelBatch:
    return events_pb2.LabelBatch(
        model=chunk.model, request_ids=chunk.request_ids, labels=chunk.labels
    )
