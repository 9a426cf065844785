"""Ingestion's protobuf conversions: requests decode to the rows and labels they hold (refusing
oversized ones before converting them), and responses and published events keep every field
across the wire."""

from __future__ import annotations

import pyarrow as pa
import pytest
from google.protobuf import struct_pb2

from driftloop.protos.ingestion.v1 import ingestion_pb2
from driftloop.services.ingestion.adapters import pb
from driftloop.services.ingestion.core.batches import Ingested, Limits, RowBatch, RowsRequest
from driftloop.services.ingestion.core.labels import LabelChunk, LabelsRequest, make_label_chunks
from driftloop.shared.errors import TooLarge
from driftloop.shared.records import ipc_to_table, table_to_ipc

pytestmark = pytest.mark.unit


def over_the_wire(message):  # type: ignore[no-untyped-def]
    return type(message).FromString(message.SerializeToString())


def struct(**values: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def test_an_ingest_request_decodes_to_its_rows() -> None:
    request = over_the_wire(
        ingestion_pb2.IngestRequest(
            dataset="d", rows=[struct(a=1, s="x"), struct(b=True)], batch_id="retry-1"
        )
    )
    assert pb.rows_request_from_pb(request, Limits()) == RowsRequest(
        "d", [{"a": 1.0, "s": "x"}, {"b": True}], b"", "retry-1"
    )
    ipc = table_to_ipc(pa.table({"a": [1]}))
    request = ingestion_pb2.IngestRequest(dataset="d", arrow_ipc=ipc)
    assert pb.rows_request_from_pb(request, Limits()) == RowsRequest("d", [], ipc, "")


def test_an_oversized_request_is_refused_before_its_rows_are_converted() -> None:
    request = ingestion_pb2.IngestRequest(dataset="d", rows=[struct(a=i) for i in range(4)])
    with pytest.raises(TooLarge, match="MAX_ROWS_PER_REQUEST"):
        pb.rows_request_from_pb(request, Limits(max_rows=3))


def test_responses_keep_counts_and_ids() -> None:
    table = pa.table({"a": [1, 2, 3]})
    ingested = Ingested.of([RowBatch("d", "b1", table), RowBatch("d", "b2", table.slice(0, 1))])
    reply = over_the_wire(pb.ingested_to_pb(ingested))
    assert Ingested(reply.rows_accepted, list(reply.batch_ids)) == Ingested(4, ["b1", "b2"])
    chunks = make_label_chunks("m", ["r1", "r2", "r3"], ["1", "0", "1"], chunk=2)
    labels = over_the_wire(pb.labels_response_to_pb(chunks))
    assert labels.labels_accepted == 3
    assert list(labels.batch_ids) == [c.batch_id for c in chunks]


def test_a_labels_request_keeps_one_pair_past_the_limit_at_most() -> None:
    request = over_the_wire(
        ingestion_pb2.IngestLabelsRequest(
            model="m", request_ids=["a", "b", "c"], labels=["1", "0", "1"], batch_id="day-1"
        )
    )
    assert pb.labels_request_from_pb(request, 5) == LabelsRequest(
        "m", ["a", "b", "c"], ["1", "0", "1"], "day-1"
    )
    cut = pb.labels_request_from_pb(request, 1)
    assert (cut.request_ids, cut.labels) == (["a", "b"], ["1", "0"]), "enough to refuse it"


def test_published_events_carry_the_batch_and_the_chunk() -> None:
    table = pa.table({"a": [1, 2], "_ingested_at": [1.0, 1.0]})
    message = over_the_wire(pb.record_batch_to_pb(RowBatch("d", "b1", table), "grpc"))
    back = RowBatch(message.dataset, message.batch_id, ipc_to_table(message.arrow_ipc))
    assert (back.dataset, back.batch_id, message.source) == ("d", "b1", "grpc")
    assert back.table.equals(table) and message.row_count == 2
    chunk = LabelChunk("m", "c1", ["r1", "r2"], ["yes", "no"])
    message = over_the_wire(pb.label_batch_to_pb(chunk))
    assert LabelChunk(message.model, "c1", list(message.request_ids), list(message.labels)) == (
        chunk
    )
