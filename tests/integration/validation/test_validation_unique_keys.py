"""A key column on a real broker: declared unique over gRPC, duplicates within and across
batches rejected with "duplicate key id=..." on driftloop.records.rejected, and still after a
restart of the validation consumer (keys rebuilt from the curated data); rows in = curated +
rejected, and every curated key appears once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pyarrow as pa
import pytest
from support import wait_for

from driftloop.protos.validation.v1 import validation_pb2, validation_pb2_grpc
from driftloop.services.ingestion.adapters.kafka import RawBatchPublisher
from driftloop.services.ingestion.core.batches import RowBatch, stamp
from driftloop.services.validation.adapters.grpc import ValidationServicer
from driftloop.services.validation.adapters.kafka import RecordBatchHandler
from driftloop.services.validation.core.catalog import SchemaCatalog
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.services.validation.main import GROUP, SERVICE
from driftloop.shared.auth import INGEST
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.manifest import latest_manifest, read_snapshot
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

DATASET = "orders-unique"


def batch(batch_id: str, ids: list[str | None]) -> RowBatch:
    table = pa.table({"id": ids, "amount": [float(i) for i in range(len(ids))]})
    return RowBatch(DATASET, batch_id, stamp(table, 1.0))


async def test_duplicate_keys_are_rejected_across_batches_and_a_restart(
    common: CommonSettings,
) -> None:
    bootstrap = common.bootstrap()
    await ensure_topics(bootstrap)
    store = open_object_store(common)
    publisher = EventPublisher(bootstrap, "test")
    await publisher.start()
    raw = RawBatchPublisher(publisher)
    catalog = SchemaCatalog(store, cache_seconds=0)
    reasons: list[str] = []

    async def on_rejected(event: envelope.Envelope) -> None:
        if event.type == "RejectedRows" and event.rejected_rows.dataset == DATASET:
            reasons.extend(r.reason for r in event.rejected_rows.rows)

    def validation() -> EventConsumer:  # a fresh handler: nothing remembered in memory
        handler = RecordBatchHandler(store, catalog, QualityTracker(), publisher)
        return EventConsumer(
            bootstrap=bootstrap,
            group=GROUP,
            topic_names=[topics.RECORDS_RAW],
            publisher=publisher,
            on_batch=handler.handle_records,
        )

    rejected_reader = EventConsumer(
        bootstrap=bootstrap,
        group=None,
        topic_names=[topics.RECORDS_REJECTED],
        publisher=publisher,
        on_event=on_rejected,
    )
    binding = ServiceBinding(
        validation_pb2_grpc.add_ValidationServiceServicer_to_server,
        ValidationServicer(catalog, QualityTracker()),
        SERVICE,
        {"PutSchema": INGEST},
    )
    server, _, port = build_server(common, 0, [binding])
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    first = validation()
    consumers = [first, rejected_reader]
    tasks = [asyncio.create_task(c.run()) for c in consumers]

    def accounted(rows: int) -> Callable[[], bool]:
        def done() -> bool:
            manifest = latest_manifest(store, DATASET)
            return manifest is not None and manifest.rows_in == rows

        return done

    try:
        stub = validation_pb2_grpc.ValidationServiceStub(channel)
        declared = await stub.PutSchema(
            validation_pb2.DatasetSchema(
                dataset=DATASET,
                columns=[
                    validation_pb2.ColumnSchema(name="id", type="string", unique=True),
                    validation_pb2.ColumnSchema(name="amount", type="float"),
                ],
            )
        )
        assert declared.columns[0].unique
        await asyncio.wait_for(asyncio.gather(first.ready.wait(), rejected_reader.ready.wait()), 30)
        await raw.publish([batch("b1", ["a", "b", "a", None]), batch("b2", ["c", "b"])], "test")
        await wait_for(accounted(6), 30, "the first two batches accounted for")
        await raw.publish([batch("b1", ["a", "b", "a", None])], "test")  # a producer retry

        await first.stop()  # restart validation: the next consumer rebuilds keys from Parquet
        await tasks[0]
        second = validation()
        consumers.append(second)
        tasks[0] = asyncio.create_task(second.run())
        await raw.publish([batch("b3", ["a", "d", "c", "d"])], "test")
        await wait_for(accounted(10), 30, "every row accounted for")
        await wait_for(lambda: len(reasons) >= 5, 30, "the rejected rows with their reasons")

        manifest = latest_manifest(store, DATASET)
        assert manifest is not None
        assert (manifest.total_rows, manifest.rows_rejected) == (5, 5)
        ids = read_snapshot(store, manifest)["id"].tolist()
        keys = [i for i in ids if isinstance(i, str)]
        assert sorted(keys) == ["a", "b", "c", "d"] and len(ids) == 5  # one null id
        assert sorted(set(reasons)) == [
            "duplicate key id='a'",
            "duplicate key id='b'",
            "duplicate key id='c'",
            "duplicate key id='d'",
        ]
    finally:
        await channel.close()
        for consumer in consumers:
            await consumer.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        await server.stop(grace=1)
        await publisher.stop()
