"""Labels core and servicer: pairs are checked, cut into LabelBatch chunks with ids that a retry
reproduces, JSON label messages parsed or refused with a reason, label files read in chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from driftloop.protos.ingestion.v1 import ingestion_pb2
from driftloop.services.ingestion.adapters.grpc import IngestionServicer
from driftloop.services.ingestion.core.labels import (
    LabelChunk,
    make_label_chunks,
    parse_label_message,
)
from driftloop.shared.cli.commands.ingest import RejectedLine, label_pairs, record_batches
from driftloop.shared.errors import InvalidInput, NotReady, TooLarge

pytestmark = pytest.mark.unit


def test_chunks_hold_at_most_the_chunk_size_in_order() -> None:
    ids = [f"r{i}" for i in range(12)]
    chunks = make_label_chunks("churn", ids, [str(i % 2) for i in range(12)], chunk=5)
    assert [len(c.request_ids) for c in chunks] == [5, 5, 2]
    assert [r for c in chunks for r in c.request_ids] == ids
    assert len({c.batch_id for c in chunks}) == 3
    assert all(c.model == "churn" for c in chunks)


def test_ids_are_deterministic_for_the_same_content_and_differ_otherwise() -> None:
    first = make_label_chunks("churn", ["a", "b"], ["1", "0"])
    again = make_label_chunks("churn", ["a", "b"], ["1", "0"])
    other = make_label_chunks("churn", ["a", "b"], ["1", "1"])
    assert [c.batch_id for c in first] == [c.batch_id for c in again]
    assert first[0].event_id == again[0].event_id
    assert first[0].batch_id != other[0].batch_id
    assert first[0].event_id != other[0].event_id
    other_model = make_label_chunks("fraud", ["a", "b"], ["1", "0"])
    assert other_model[0].event_id != first[0].event_id


def test_a_client_batch_id_names_the_chunks() -> None:
    chunks = make_label_chunks("m", ["a", "b", "c"], ["x", "y", "z"], batch_id="day-1", chunk=2)
    assert [c.batch_id for c in chunks] == ["day-1.0", "day-1.1"]


@pytest.mark.parametrize(
    ("model", "ids", "labels", "error", "text"),
    [
        ("m", ["a", "b"], ["1"], InvalidInput, "2 request ids but 1 labels"),
        ("m", [], [], InvalidInput, "no labels"),
        ("m", ["a", ""], ["1", "0"], InvalidInput, "request id 1 is empty"),
        ("m", ["a"], [""], InvalidInput, "label 0 is empty"),
        ("m", ["a" * 300], ["1"], InvalidInput, "longer than"),
        ("../x", ["a"], ["1"], InvalidInput, "model name"),
        ("m", ["a", "b", "c"], ["1", "1", "1"], TooLarge, "over the limit of 2"),
    ],
)
def test_bad_pairs_are_refused_with_a_reason(
    model: str, ids: list[str], labels: list[str], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        make_label_chunks(model, ids, labels, max_labels=2)


def test_json_label_messages() -> None:
    assert parse_label_message(b'{"model": "m", "request_id": "r1", "label": "yes"}') == [
        ("m", "r1", "yes")
    ]
    many = b'[{"model": "m", "request_id": "r1", "label": 1}, '
    many += b'{"model": "n", "request_id": "r2", "label": 2.5}]'
    assert parse_label_message(many) == [("m", "r1", "1"), ("n", "r2", "2.5")]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (b"", "empty value"),
        (b'{"model": "m", ', "not valid JSON"),
        (b"[]", "empty array"),
        (b"[1]", "not a JSON object"),
        (b'{"model": "m", "label": "x"}', "lacks \\['request_id'\\]"),
        (b'{"model": "m", "request_id": "r", "label": "x", "extra": 1}', "unknown fields"),
        (b'{"model": "m", "request_id": 5, "label": "x"}', "must be strings"),
        (b'{"model": "m", "request_id": "r", "label": true}', "string or a number"),
        (b'{"model": "m", "request_id": "", "label": "x"}', "request id 0 is empty"),
    ],
)
def test_bad_json_label_messages_say_why(value: bytes, text: str) -> None:
    with pytest.raises(InvalidInput, match=text):
        parse_label_message(value)


class Context:
    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("x-correlation-id", "corr-1")]


async def _no_rows(*_: Any, **__: Any) -> None:
    raise AssertionError("rows are not published by IngestLabels")


async def test_servicer_publishes_chunks_and_answers_their_ids() -> None:
    published: list[tuple[list[LabelChunk], str, str]] = []

    async def publish_labels(chunks: list[LabelChunk], source: str, *, correlation_id: str) -> None:
        published.append((chunks, source, correlation_id))

    servicer = IngestionServicer(_no_rows, batch_rows=5000, publish_labels=publish_labels)
    ids = [f"r{i}" for i in range(7001)]
    request = ingestion_pb2.IngestLabelsRequest(model="m", request_ids=ids, labels=["1"] * 7001)
    reply = await servicer.IngestLabels(request, Context())  # type: ignore[arg-type]
    assert reply.labels_accepted == 7001
    chunks, source, correlation = published[0]
    assert [len(c.labels) for c in chunks] == [5000, 2001]
    assert list(reply.batch_ids) == [c.batch_id for c in chunks]
    assert (source, correlation) == ("grpc", "corr-1")


async def test_servicer_refuses_too_many_labels_before_publishing() -> None:
    async def publish_labels(*_: Any, **__: Any) -> None:
        raise AssertionError("nothing is published")

    servicer = IngestionServicer(
        _no_rows, batch_rows=5000, publish_labels=publish_labels, max_labels=3
    )
    request = ingestion_pb2.IngestLabelsRequest(model="m", request_ids=["a"] * 4, labels=["1"] * 4)
    with pytest.raises(TooLarge):
        await servicer.IngestLabels(request, Context())  # type: ignore[arg-type]
    without = IngestionServicer(_no_rows, batch_rows=5000)
    with pytest.raises(NotReady):
        await without.IngestLabels(request, Context())  # type: ignore[arg-type]


def test_label_files_are_read_as_text_and_empty_pairs_skipped(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label,extra\n007,1,x\n008,,y\n,0,z\n009,0,w\n")
    rejected: list[RejectedLine] = []
    types = {"request_id": pa.string(), "label": pa.string()}
    pairs = [
        label_pairs(b, "request_id", "label", rejected)
        for b in record_batches(path, 2, rejected, column_types=types)
    ]
    ids = [i for p in pairs for i in p[0]]
    labels = [v for p in pairs for v in p[1]]
    assert (ids, labels) == (["007", "009"], ["1", "0"])
    assert len(rejected) == 2 and all("empty" in r.reason for r in rejected)
    with pytest.raises(InvalidInput, match="no column 'id'"):
        label_pairs(next(record_batches(path, 2)), "id", "label", rejected)
