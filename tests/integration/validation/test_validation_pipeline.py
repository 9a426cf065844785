"""Ingestion and validation together on a real broker: rows in over gRPC and the JSON topic,
good rows curated (local and S3 object stores), bad rows rejected with reasons or dead-lettered."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf import struct_pb2
from pydantic import SecretStr
from support import wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.protos.validation.v1 import validation_pb2, validation_pb2_grpc
from driftloop.services.ingestion.adapters.grpc import IngestionServicer
from driftloop.services.ingestion.adapters.kafka import JsonTopicHandler, RawBatchPublisher
from driftloop.services.ingestion.main import JSON_GROUP
from driftloop.services.ingestion.main import SERVICE as INGESTION
from driftloop.services.validation.adapters.grpc import ValidationServicer
from driftloop.services.validation.adapters.kafka import RecordBatchHandler
from driftloop.services.validation.core.catalog import SchemaCatalog
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.services.validation.main import GROUP as VALIDATION_GROUP
from driftloop.services.validation.main import SERVICE as VALIDATION
from driftloop.shared.auth import INGEST
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.manifest import latest_manifest, read_snapshot
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.records import table_to_ipc
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings, S3Settings

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    ingestion: ingestion_pb2_grpc.IngestionServiceStub
    validation: validation_pb2_grpc.ValidationServiceStub
    store: ObjectStore
    bootstrap: str
    events: dict[str, list[envelope.Envelope]] = field(default_factory=dict)

    def seen(self, topic: str, kind: str, dataset: str) -> list[Any]:
        found = []
        for event in self.events.get(topic, []):
            payload = envelope.payload(event)
            if event.type == kind and getattr(payload, "dataset", dataset) == dataset:
                found.append(payload)
        return found

    def dead_letters(self, key: bytes) -> list[events_pb2.DeadLetter]:
        return [
            e.dead_letter
            for e in self.events.get(topics.DEADLETTER, [])
            if e.dead_letter.key == key
        ]


@asynccontextmanager
async def running_stack(
    common: CommonSettings, store: ObjectStore, **handler: Any
) -> AsyncIterator[Stack]:
    """Both servicers on free ports, their consumers, and collectors of what they publish."""
    bootstrap = common.bootstrap()
    await ensure_topics(bootstrap)
    publisher = EventPublisher(bootstrap, "test-stack")
    await publisher.start()
    raw = RawBatchPublisher(publisher)
    catalog = SchemaCatalog(store, cache_seconds=0)
    quality = QualityTracker()
    events: dict[str, list[envelope.Envelope]] = {}

    async def collect(event: envelope.Envelope) -> None:
        topic = {"RejectedRows": topics.RECORDS_REJECTED, "DeadLetter": topics.DEADLETTER}.get(
            event.type, topics.RECORDS_VALIDATED
        )
        events.setdefault(topic, []).append(event)

    consumers = [
        EventConsumer(
            bootstrap=bootstrap,
            group=JSON_GROUP,
            topic_names=[topics.INGEST_JSON],
            publisher=publisher,
            on_batch=JsonTopicHandler(raw, batch_rows=5000).handle_records,
        ),
        EventConsumer(
            bootstrap=bootstrap,
            group=VALIDATION_GROUP,
            topic_names=[topics.RECORDS_RAW],
            publisher=publisher,
            on_batch=RecordBatchHandler(
                store, catalog, quality, publisher, **handler
            ).handle_records,
        ),
        EventConsumer(
            bootstrap=bootstrap,
            group=None,
            publisher=publisher,
            on_event=collect,
            topic_names=[topics.RECORDS_VALIDATED, topics.RECORDS_REJECTED, topics.DEADLETTER],
        ),
    ]
    server, _, port = build_server(
        common,
        0,
        [
            ServiceBinding(
                ingestion_pb2_grpc.add_IngestionServiceServicer_to_server,
                IngestionServicer(raw.publish, batch_rows=2),
                INGESTION,
                {"Ingest": INGEST, "IngestStream": INGEST},
            ),
            ServiceBinding(
                validation_pb2_grpc.add_ValidationServiceServicer_to_server,
                ValidationServicer(catalog, quality),
                VALIDATION,
                {"PutSchema": INGEST},
            ),
        ],
    )
    await server.start()
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in consumers)), 30)
        yield Stack(
            ingestion_pb2_grpc.IngestionServiceStub(channel),
            validation_pb2_grpc.ValidationServiceStub(channel),
            store,
            bootstrap,
            events,
        )
    finally:
        await channel.close()
        for consumer in consumers:
            await consumer.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        await server.stop(grace=1)
        await publisher.stop()


def rows(*items: dict[str, Any]) -> list[struct_pb2.Struct]:
    out = []
    for item in items:
        s = struct_pb2.Struct()
        s.update(item)
        out.append(s)
    return out


async def curated_rows(store: ObjectStore, dataset: str) -> int:
    manifest = await asyncio.to_thread(latest_manifest, store, dataset)
    return manifest.total_rows if manifest else 0


def s3_store(endpoint: str) -> ObjectStore:
    s3 = S3Settings(
        endpoint=endpoint,
        bucket=f"test-{uuid.uuid4().hex[:12]}",
        access_key=SecretStr("test"),
        secret_key=SecretStr("test-secret"),
    )
    return open_object_store(CommonSettings(object_store="s3", s3=s3))


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_grpc_rows_are_curated_and_bad_rows_rejected_with_reasons(
    backend: str, common: CommonSettings, s3_endpoint: str
) -> None:
    store = s3_store(s3_endpoint) if backend == "s3" else open_object_store(common)
    dataset = f"people-{backend}"
    async with running_stack(common, store) as stack:
        columns = [
            validation_pb2.ColumnSchema(name="age", type="int", required=True, min=0, max=150),
            validation_pb2.ColumnSchema(name="color", type="string", categories=["red", "blue"]),
            validation_pb2.ColumnSchema(name="score", type="float"),
        ]
        declared = await stack.validation.PutSchema(
            validation_pb2.DatasetSchema(dataset=dataset, columns=columns)
        )
        assert declared.origin == "declared" and len(declared.schema_hash) == 64

        response = await stack.ingestion.Ingest(
            ingestion_pb2.IngestRequest(
                dataset=dataset,
                rows=rows(
                    {"age": 30, "color": "red", "score": 0.5},
                    {"age": 200, "color": "blue", "score": 1},
                    {"age": 40, "color": "purple", "score": 2},
                    {"age": 50, "color": "blue", "score": 3, "note": "extra"},
                    {"age": 3.5, "color": "red", "score": 4},
                ),
            )
        )
        assert response.rows_accepted == 5 and len(response.batch_ids) == 3  # batch_rows=2

        text_ages = pa.table({"age": ["abc", "60"], "color": ["red", "red"], "score": [1.0, 2.0]})
        stream = await stack.ingestion.IngestStream(
            iter(
                [
                    ingestion_pb2.IngestRequest(dataset=dataset, arrow_ipc=table_to_ipc(text_ages)),
                ]
            )
        )
        assert stream.rows_accepted == 2

        await wait_for(lambda: curated_rows(store, dataset), 30, "curated rows")
        await wait_for(
            lambda: (
                sum(
                    len(r.rows)
                    for r in stack.seen(topics.RECORDS_REJECTED, "RejectedRows", dataset)
                )
                == 4
            ),
            30,
            "4 rejected rows",
        )
        report = await wait_for(lambda: _report_with(stack, dataset, 7), 30, "all rows counted")

        assert await curated_rows(store, dataset) == 3
        reasons = sorted(
            r.reason
            for e in stack.seen(topics.RECORDS_REJECTED, "RejectedRows", dataset)
            for r in e.rows
        )
        assert reasons == [
            "column 'age': value 'abc' is not a number",
            "column 'age': value 200 is above the maximum 150",
            "column 'age': value 3.5 is not an integer",
            "column 'color': value 'purple' is not one of the categories ['red', 'blue']",
        ]
        assert (report.rows_accepted, report.rows_rejected, report.batches) == (3, 4, 4)
        assert report.rejection_reasons["out of range"] == 1
        assert report.rejection_reasons["not a number"] == 1
        assert report.rejection_reasons["unknown column 'note'"] == 1
        assert report.curated_rows == 3 and report.manifest_version >= 1

        manifest = await asyncio.to_thread(latest_manifest, store, dataset)
        assert manifest is not None and manifest.schema_hash == declared.schema_hash
        snapshot = await asyncio.to_thread(read_snapshot, store, manifest)
        assert sorted(snapshot["age"].tolist()) == [30, 50, 60]
        assert "note" not in snapshot.columns and "_ingested_at" in snapshot.columns

        accepted = await wait_for(lambda: _validated_rows(stack, dataset, 3), 30, "validated")
        versions = await wait_for(
            lambda: [
                v
                for v in stack.seen(topics.RECORDS_VALIDATED, "DatasetVersioned", dataset)
                if v.manifest_version == manifest.version
            ],
            30,
            "the last DatasetVersioned",
        )
        assert versions[0].total_rows == 3 and versions[0].manifest_key == manifest.key
        assert all(f.manifest_version >= 1 for f in accepted)
        assert {b.source for f in accepted for b in f.batches} == {"grpc"}

        listed = await stack.validation.ListDatasets(validation_pb2.ListDatasetsRequest())
        [summary] = [d for d in listed.datasets if d.dataset == dataset]
        assert summary.curated_rows == 3
        await _assert_errors(stack)


async def _report_with(stack: Stack, dataset: str, total: int) -> Any:
    report = await stack.validation.GetQualityReport(
        validation_pb2.GetQualityReportRequest(dataset=dataset)
    )
    return report if report.rows_accepted + report.rows_rejected == total else None


async def _assert_errors(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.validation.GetSchema(validation_pb2.GetSchemaRequest(dataset="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.validation.PutSchema(
            validation_pb2.DatasetSchema(
                dataset="d", columns=[validation_pb2.ColumnSchema(name="x", type="decimal")]
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "type 'decimal'" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.validation.PutSchema(
            validation_pb2.DatasetSchema(
                dataset="d",
                columns=[
                    validation_pb2.ColumnSchema(
                        name="c", type="string", categories=[str(i) for i in range(10_001)]
                    )
                ],
            )
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "10,001 categories; the limit is 10,000" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.ingestion.Ingest(ingestion_pb2.IngestRequest(dataset="d"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no rows" in (info.value.details() or "")


async def test_a_curated_file_over_the_inline_limit_is_sent_by_reference(
    common: CommonSettings,
) -> None:
    store = open_object_store(common)
    dataset = f"big-{uuid.uuid4().hex[:8]}"
    async with running_stack(common, store, max_inline_bytes=16) as stack:
        reply = await stack.ingestion.Ingest(
            ingestion_pb2.IngestRequest(dataset=dataset, rows=rows({"x": 1.0}, {"x": 2.0}))
        )
        assert reply.rows_accepted == 2
        [curated] = await wait_for(lambda: _validated_rows(stack, dataset, 2), 30, "CuratedRows")
    assert curated.parquet == b"" and curated.row_count == 2
    stored = store.get(curated.file_key)
    assert hashlib.sha256(stored).hexdigest() == curated.sha256
    assert pq.read_table(io.BytesIO(stored))["x"].to_pylist() == [1.0, 2.0]


async def test_json_topic_rows_are_curated_and_malformed_messages_dead_lettered(
    common: CommonSettings,
) -> None:
    store = open_object_store(common)
    dataset = "sensors"
    async with running_stack(common, store) as stack:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
        await producer.start()
        try:
            key = dataset.encode()
            await producer.send_and_wait(
                topics.INGEST_JSON,
                json.dumps({"temp": 21.5, "room": "a", "ok": True}).encode(),
                key=key,
            )
            await producer.send_and_wait(topics.INGEST_JSON, b'{"temp": 22.0, "room": ', key=key)
            await producer.send_and_wait(
                topics.INGEST_JSON,
                json.dumps(
                    [
                        {"temp": 23.0, "room": "b", "ok": False},
                        {"temp": 24.5, "room": "c", "ok": True},
                    ]
                ).encode(),
                key=key,
            )
            await producer.send_and_wait(topics.INGEST_JSON, b"42", key=key)
        finally:
            await producer.stop()

        await wait_for(
            lambda: len(stack.dead_letters(dataset.encode())) == 2, 30, "two dead letters"
        )
        await wait_for(lambda: _curated_is(store, dataset, 3), 30, "3 curated rows")
        letters = stack.dead_letters(dataset.encode())
        assert {letter.source_topic for letter in letters} == {topics.INGEST_JSON}
        assert {letter.consumer_group for letter in letters} == {JSON_GROUP}
        by_value = {letter.value: letter.error for letter in letters}
        assert by_value[b'{"temp": 22.0, "room": '].startswith("InvalidInput: ")
        assert "is not valid JSON" in by_value[b'{"temp": 22.0, "room": ']
        assert "is a JSON number: expected an object" in by_value[b"42"]

        schema = await stack.validation.GetSchema(validation_pb2.GetSchemaRequest(dataset=dataset))
        assert schema.origin == "inferred"
        assert [(c.name, c.type) for c in schema.columns] == [
            ("temp", "float"),
            ("room", "string"),
            ("ok", "bool"),
        ]
        files = await wait_for(lambda: _validated_rows(stack, dataset, 3), 30, "validated rows")
        # each curated file travels by reference to the bytes the store holds, as the manifest
        # says (claim checks; test_validation_claim_check_bus.py covers the inline opt-in)
        head = latest_manifest(store, dataset)
        assert head is not None
        entries = {f.key: f for f in head.files}
        stored = {f.file_key: store.get(f.file_key) for f in files}
        for curated in files:
            entry = entries[curated.file_key]
            data = stored[curated.file_key]
            assert curated.parquet == b"" and curated.byte_size == len(data)
            assert curated.sha256 == entry.sha256 == hashlib.sha256(data).hexdigest()
            assert [b.batch_id for b in curated.batches] == entry.batch_ids
            assert sum(b.rows for b in curated.batches) == curated.row_count == entry.rows
        assert {b.source for f in files for b in f.batches} == {"json-topic"}
        rows = pa.concat_tables(pq.read_table(io.BytesIO(d)) for d in stored.values())
        assert sorted(rows.column("temp").to_pylist()) == [21.5, 23.0, 24.5]
        assert stack.seen(topics.RECORDS_REJECTED, "RejectedRows", dataset) == []


async def _curated_is(store: ObjectStore, dataset: str, rows: int) -> bool:
    return await curated_rows(store, dataset) == rows


def _validated_rows(stack: Stack, dataset: str, rows: int) -> list[events_pb2.CuratedRows]:
    files = stack.seen(topics.RECORDS_VALIDATED, "CuratedRows", dataset)
    return files if sum(f.row_count for f in files) == rows else []
