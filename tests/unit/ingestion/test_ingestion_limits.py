"""Ingestion input limits: oversized requests and JSON messages are refused, naming the limit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pyarrow as pa
import pytest
from aiokafka import ConsumerRecord
from google.protobuf import struct_pb2

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.ingestion.v1 import ingestion_pb2
from driftloop.services.ingestion.adapters.grpc import IngestionServicer
from driftloop.services.ingestion.adapters.kafka import JsonTopicHandler
from driftloop.services.ingestion.core.batches import Limits, RowBatch, make_batches
from driftloop.services.ingestion.settings import IngestionSettings
from driftloop.shared.bus import topics
from driftloop.shared.errors import TooLarge
from driftloop.shared.grpc.server import status_for
from driftloop.shared.records import table_to_ipc

pytestmark = pytest.mark.unit

SMALL = Limits(max_rows=3, max_columns=2)


def rows(count: int, columns: int = 1) -> list[dict[str, Any]]:
    return [{f"c{j}": i for j in range(columns)} for i in range(count)]


def test_defaults_and_env_settings() -> None:
    assert IngestionSettings().limits() == Limits(max_rows=100_000, max_columns=1000)
    custom = IngestionSettings(max_rows_per_request=10, max_columns=4)
    assert custom.limits() == Limits(max_rows=10, max_columns=4)


def test_env_names_of_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_INGESTION_MAX_ROWS_PER_REQUEST", "7")
    monkeypatch.setenv("DRIFTLOOP_INGESTION_MAX_COLUMNS", "5")
    assert IngestionSettings().limits() == Limits(max_rows=7, max_columns=5)


def test_requests_at_the_limits_pass() -> None:
    batches = make_batches("d", rows=rows(3, 2), limits=SMALL)
    assert sum(b.row_count for b in batches) == 3


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"rows": rows(4)}, "DRIFTLOOP_INGESTION_MAX_ROWS_PER_REQUEST"),
        ({"rows": rows(1, 3)}, "DRIFTLOOP_INGESTION_MAX_COLUMNS"),
        ({"rows": [{"a": 1}, {"b": 2}, {"c": 3}]}, "DRIFTLOOP_INGESTION_MAX_COLUMNS"),
        (
            {"arrow_ipc": table_to_ipc(pa.table({"a": list(range(4))}))},
            "DRIFTLOOP_INGESTION_MAX_ROWS_PER_REQUEST",
        ),
        (
            {"arrow_ipc": table_to_ipc(pa.table({"a": [1], "b": [2], "c": [3]}))},
            "DRIFTLOOP_INGESTION_MAX_COLUMNS",
        ),
    ],
)
def test_oversized_requests_name_the_limit_and_setting(
    kwargs: dict[str, Any], setting: str
) -> None:
    with pytest.raises(TooLarge) as caught:
        make_batches("d", limits=SMALL, **kwargs)
    assert setting in str(caught.value)
    assert "limit of" in str(caught.value)


def test_too_large_maps_to_resource_exhausted() -> None:
    assert status_for(TooLarge("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[RowBatch]] = []

    async def __call__(self, batches: list[RowBatch], source: str, *, correlation_id: str) -> None:
        self.calls.append(batches)


class FakeContext:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


def request(count: int) -> ingestion_pb2.IngestRequest:
    pb_rows = []
    for i in range(count):
        row = struct_pb2.Struct()
        row.update({"a": i})
        pb_rows.append(row)
    return ingestion_pb2.IngestRequest(dataset="d", rows=pb_rows)


async def test_servicer_refuses_oversized_request_without_publishing() -> None:
    publish = Recorder()
    servicer = IngestionServicer(publish, batch_rows=5000, limits=SMALL)
    with pytest.raises(TooLarge, match="MAX_ROWS_PER_REQUEST"):
        await servicer.Ingest(request(4), FakeContext())  # type: ignore[arg-type]
    assert publish.calls == []
    await servicer.Ingest(request(3), FakeContext())  # type: ignore[arg-type]
    assert len(publish.calls) == 1


class FakePublisher:
    producer_name = "test"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def event(self, payload: Any, **_: Any) -> Any:
        return payload

    async def publish(self, topic: str, key: str, event: Any) -> None:
        self.sent.append((topic, key, event))


class FakeRaw:
    def __init__(self) -> None:
        self.published: list[RowBatch] = []
        self.publisher = FakePublisher()

    async def enqueue(self, batches: list[RowBatch], source: str) -> list[asyncio.Task[None]]:
        self.published.extend(batches)
        return []


def json_record(offset: int, value: Any) -> ConsumerRecord:
    data = json.dumps(value).encode()
    return ConsumerRecord(topics.INGEST_JSON, 0, offset, 0, 0, b"d", data, None, 0, len(data), ())


async def test_oversized_json_messages_are_dead_lettered_with_the_reason() -> None:
    raw = FakeRaw()
    handler = JsonTopicHandler(raw, batch_rows=5000, limits=SMALL)  # type: ignore[arg-type]
    good = json_record(0, rows(2))
    too_long = json_record(1, rows(4))
    too_wide = json_record(2, rows(1, 3))
    poll = await handler.handle_records([good, too_long, too_wide])
    await handler.drain()
    assert await asyncio.wait_for(poll, 10) == 3

    assert sum(b.row_count for b in raw.published) == 2
    sent = raw.publisher.sent
    letters: list[events_pb2.DeadLetter] = [event for _, _, event in sent]
    assert [t for t, _, _ in sent] == [topics.DEADLETTER] * 2
    assert [letter.offset for letter in letters] == [1, 2]
    assert letters[0].error.startswith("TooLarge: ")
    assert "DRIFTLOOP_INGESTION_MAX_ROWS_PER_REQUEST" in letters[0].error
    assert "DRIFTLOOP_INGESTION_MAX_COLUMNS" in letters[1].error
    assert {letter.consumer_group for letter in letters} == {"ingestion-json"}
