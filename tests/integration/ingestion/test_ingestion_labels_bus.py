"""Labels on a real broker: IngestLabels over gRPC and messages on driftloop.labels.json both
reach driftloop.labels as LabelBatch events keyed by model; retries are the same events; a
malformed message is dead-lettered with its reason and the stream goes on."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from support import wait_for

from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.services.ingestion.adapters.grpc import IngestionServicer
from driftloop.services.ingestion.adapters.kafka_labels import JsonLabelsHandler, LabelPublisher
from driftloop.services.ingestion.main import LABELS_JSON_GROUP, SERVICE
from driftloop.shared.auth import INGEST
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration


async def _rows(*_: object, **__: object) -> None:
    raise AssertionError("no rows in this test")


async def test_labels_via_grpc_and_json_topic_reach_the_labels_topic(
    common: CommonSettings,
) -> None:
    bootstrap = common.bootstrap()
    await ensure_topics(bootstrap)
    publisher = EventPublisher(bootstrap, "ingestion")
    await publisher.start()
    labels = LabelPublisher(publisher)
    json_consumer = EventConsumer(
        bootstrap=bootstrap,
        group=LABELS_JSON_GROUP,
        topic_names=[topics.LABELS_JSON],
        publisher=publisher,
        on_batch=JsonLabelsHandler(labels, chunk=5000).handle_records,
    )
    servicer = IngestionServicer(_rows, batch_rows=5000, publish_labels=labels.publish)
    binding = ServiceBinding(
        ingestion_pb2_grpc.add_IngestionServiceServicer_to_server,
        servicer,
        SERVICE,
        {"IngestLabels": INGEST},
    )
    server, _, port = build_server(common, 0, [binding])
    await server.start()
    # a real consumer of driftloop.labels and of the dead letters, reading raw messages
    reader = AIOKafkaConsumer(
        topics.LABELS, topics.DEADLETTER, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await reader.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    task = asyncio.create_task(json_consumer.run())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    seen: list[tuple[bytes, envelope.Envelope]] = []

    async def drain() -> None:
        for records in (await reader.getmany(timeout_ms=200)).values():
            seen.extend((r.key, envelope.decode(r.value)) for r in records)

    def batches(model: str) -> list[envelope.Envelope]:
        return [e for k, e in seen if e.type == "LabelBatch" and k == model.encode()]

    try:
        await asyncio.wait_for(json_consumer.ready.wait(), 30)
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        ids = [f"req-{i}" for i in range(12_000)]
        request = ingestion_pb2.IngestLabelsRequest(
            model="churn", request_ids=ids, labels=[str(i % 3) for i in range(12_000)]
        )
        reply = await stub.IngestLabels(request)
        retry = await stub.IngestLabels(request)  # a producer retry of the same batch
        assert reply.labels_accepted == 12_000 and len(reply.batch_ids) == 3
        assert list(retry.batch_ids) == list(reply.batch_ids)

        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.IngestLabels(
                ingestion_pb2.IngestLabelsRequest(model="churn", request_ids=["a"], labels=[])
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "they pair up" in (bad.value.details() or "")

        rows = [{"model": "fraud", "request_id": f"f{i}", "label": "yes"} for i in range(3)]
        for row in rows[:2]:
            await producer.send_and_wait(topics.LABELS_JSON, json.dumps(row).encode(), b"fraud")
        await producer.send_and_wait(topics.LABELS_JSON, b'{"model": "fraud", ', b"fraud")
        await producer.send_and_wait(topics.LABELS_JSON, json.dumps(rows[2]).encode(), b"fraud")

        async def arrived() -> bool:
            await drain()
            fraud = [r for e in batches("fraud") for r in e.label_batch.request_ids]
            letters = [e for _, e in seen if e.type == "DeadLetter"]
            return (
                len(batches("churn")) >= 6 and sorted(fraud) == ["f0", "f1", "f2"] and any(letters)
            )

        await wait_for(arrived, 30, "labels from gRPC and the JSON topic, and one dead letter")
        churn = batches("churn")
        assert len(churn) == 6  # three chunks, twice (the retry)
        first, second = churn[:3], churn[3:]
        assert [e.event_id for e in first] == [e.event_id for e in second], (
            "a retry is the same events: monitoring's seen-id check drops it"
        )
        got = [r for e in first for r in e.label_batch.request_ids]
        assert got == ids
        assert [v for e in first for v in e.label_batch.labels] == list(request.labels)
        letter = next(e.dead_letter for _, e in seen if e.type == "DeadLetter")
        assert letter.source_topic == topics.LABELS_JSON
        assert "not valid JSON" in letter.error
    finally:
        await channel.close()
        await json_consumer.stop()
        await asyncio.wait_for(task, 15)
        await server.stop(grace=1)
        await reader.stop()
        await producer.stop()
        await publisher.stop()
