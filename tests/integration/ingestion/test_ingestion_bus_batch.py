"""EventConsumer's `on_batch` handler on the real broker: a poll's records arrive together, and a
failing batch is retried record by record so only the poison record is dead-lettered."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import ConsumerRecord
from support import wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics

pytestmark = pytest.mark.integration


async def test_batches_arrive_together_and_poison_records_are_isolated(broker: str) -> None:
    await ensure_topics(broker)
    publisher = EventPublisher(broker, "test")
    await publisher.start()
    calls: list[list[bytes]] = []
    handled: list[bytes] = []
    letters: list[events_pb2.DeadLetter] = []

    async def on_batch(records: list[ConsumerRecord]) -> None:
        calls.append([r.value for r in records])
        if any(r.value == b"poison" for r in records):
            raise ValueError("poison in batch")
        handled.extend(r.value for r in records)

    async def on_letter(event: envelope.Envelope) -> None:
        letters.append(event.dead_letter)

    for value in (b"r1", b"r2", b"poison", b"r3"):
        await publisher.publish_raw(topics.INGEST_JSON, b"same-key", value)
    consumer = EventConsumer(
        bootstrap=broker,
        group="t-batch",
        topic_names=[topics.INGEST_JSON],
        publisher=publisher,
        on_batch=on_batch,
    )
    dlq = EventConsumer(
        bootstrap=broker,
        group="t-batch-dlq",
        topic_names=[topics.DEADLETTER],
        publisher=publisher,
        on_event=on_letter,
    )
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(dlq.run())]
    try:
        await wait_for(lambda: len(letters) == 1, 30, "the poison record dead-lettered")
        await wait_for(lambda: sorted(handled) == [b"r1", b"r2", b"r3"], 30, "good records")
        assert letters[0].value == b"poison" and "poison in batch" in letters[0].error
        assert any(len(c) > 1 for c in calls), "one poll's records reach the handler together"
    finally:
        await consumer.stop()
        await dlq.stop()
        await asyncio.gather(*tasks)
        await publisher.stop()


async def _ignore(_: object) -> None:
    return None


def test_exactly_one_handler_is_required() -> None:
    with pytest.raises(TypeError, match="exactly one"):
        EventConsumer(
            bootstrap="127.0.0.1:1",
            group=None,
            topic_names=[],
            publisher=None,  # type: ignore[arg-type]
            on_record=_ignore,
            on_batch=_ignore,
        )
