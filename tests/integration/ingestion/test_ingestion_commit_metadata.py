"""Commit metadata on both brokers (embedded and real Kafka): what ingestion records its
time-dependent cuts in (services/ingestion/core/windows.py). Every commit of the consumer
carries the handler's metadata, `mark` commits the committed offset again with fresh
metadata, and `committed_metadata` reads both back (the embedded broker drops the metadata)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from support import wait_for

from driftloop.shared.bus import topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics

pytestmark = pytest.mark.integration


async def test_commits_carry_metadata_that_reads_back(
    any_broker: str, request: pytest.FixtureRequest
) -> None:
    def kept(metadata: str) -> str:
        # the embedded broker (Tansu) takes commit metadata but returns "": ingestion then
        # records no cut, and a lingered batch may be curated twice after a crash, as before
        return "" if request.node.callspec.params["any_broker"] == "embedded" else metadata

    await ensure_topics(any_broker)
    publisher = EventPublisher(any_broker, "test")
    await publisher.start()
    handled: list[ConsumerRecord] = []
    note = {"text": "first"}

    async def on_batch(records: list[ConsumerRecord]) -> None:
        handled.extend(records)

    def metadata(tp: TopicPartition, offset: int) -> str:
        return f"{note['text']}@{tp.partition}:{offset}"

    consumer = EventConsumer(
        bootstrap=any_broker,
        group="t-commit-metadata",
        topic_names=[topics.INGEST_JSON],
        publisher=publisher,
        on_batch=on_batch,
        commit_metadata=metadata,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 30)
        for _ in range(3):
            await publisher.publish_raw(topics.INGEST_JSON, b"k", b"[]")
        await wait_for(lambda: len(handled) == 3, 20, "three records handled")
        partition = handled[0].partition
        end = handled[-1].offset + 1

        async def committed() -> tuple[int, str] | None:
            return await consumer.committed_metadata(topics.INGEST_JSON, partition)

        async def first_committed() -> bool:
            return await committed() == (end, kept(f"first@{partition}:{end}"))

        await wait_for(first_committed, 20, "the commit, with its metadata")
        note["text"] = "marked"
        await consumer.mark(topics.INGEST_JSON, partition, start=0)
        assert await committed() == (end, kept(f"marked@{partition}:{end}")), "a new note"
    finally:
        await consumer.stop()
        await task
        await publisher.stop()
