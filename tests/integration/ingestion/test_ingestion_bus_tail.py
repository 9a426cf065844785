"""EventConsumer with a batch handler that returns the rest of its work (its "tail"): the next
poll is handled while the tail runs, offsets are committed only once it is done, and a failing
tail stops the consumer without committing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from support import wait_for

from driftloop.shared.bus import topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics

pytestmark = pytest.mark.integration

TOPIC = topics.INGEST_JSON


async def _committed(broker: str, group: str, partition: int) -> int:
    reader = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        found = await reader.committed(TopicPartition(TOPIC, partition))
        return -1 if found is None else found
    finally:
        await reader.stop()


async def _shut_down(
    tails: list[asyncio.Future[None]],
    consumer: EventConsumer,
    task: asyncio.Task[None],
    publisher: EventPublisher,
) -> None:
    """Release the tails still pending, then stop the consumer and the publisher."""
    for tail in tails:
        if not tail.done():
            tail.set_result(None)
    await consumer.stop()
    await task
    await publisher.stop()


async def _publish(publisher: EventPublisher, *values: bytes) -> None:
    for value in values:
        await publisher.publish_raw(TOPIC, b"k", value)


async def test_offsets_wait_for_the_tail_while_the_next_poll_is_handled(broker: str) -> None:
    await ensure_topics(broker)
    publisher = EventPublisher(broker, "test")
    await publisher.start()
    await _publish(publisher, b"a")
    release = asyncio.get_running_loop().create_future()
    polls: list[list[bytes]] = []
    partitions: set[int] = set()

    async def on_batch(records: list[ConsumerRecord]) -> asyncio.Future[None] | None:
        polls.append([r.value for r in records])
        partitions.update(r.partition for r in records)
        return release if len(polls) == 1 else None

    consumer = EventConsumer(
        bootstrap=broker,
        group="t-tail",
        topic_names=[TOPIC],
        publisher=publisher,
        on_batch=on_batch,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await wait_for(lambda: len(polls) == 1, 30, "first poll handled")
        await _publish(publisher, b"b")
        await wait_for(lambda: len(polls) == 2, 30, "next poll handled while the tail runs")
        (partition,) = partitions
        assert await _committed(broker, "t-tail", partition) < 1, "nothing committed yet"
        release.set_result(None)
        await wait_for(
            lambda: _committed_is(broker, "t-tail", partition, 2),
            30,
            "both polls committed after the tail",
        )
    finally:
        await _shut_down([release], consumer, task, publisher)


async def test_more_polls_in_flight_commit_in_order(broker: str) -> None:
    await ensure_topics(broker)
    publisher = EventPublisher(broker, "test")
    await publisher.start()
    loop = asyncio.get_running_loop()
    tails = [loop.create_future(), loop.create_future()]
    polls: list[list[bytes]] = []
    partitions: set[int] = set()
    last_offset = -1

    async def on_batch(records: list[ConsumerRecord]) -> asyncio.Future[None] | None:
        nonlocal last_offset
        polls.append([r.value for r in records])
        partitions.update(r.partition for r in records)
        last_offset = max(last_offset, *(r.offset for r in records))
        return tails[len(polls) - 1] if len(polls) <= len(tails) else None

    consumer = EventConsumer(
        bootstrap=broker,
        group="t-tail-3",
        topic_names=[TOPIC],
        publisher=publisher,
        on_batch=on_batch,
        from_latest=True,  # the module's broker holds other tests' messages on this topic
        max_pending_polls=3,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await consumer.ready.wait()
        for value in (b"1", b"2", b"3"):
            await _publish(publisher, value)
            await wait_for(lambda v=value: [v] in polls, 30, f"poll of {value!r} handled")
        (partition,) = partitions
        # the third poll was handled while both earlier tails were pending; the second tail
        # finishing first commits nothing, since the first poll is not done
        tails[1].set_result(None)
        assert await _committed(broker, "t-tail-3", partition) < last_offset - 1
        tails[0].set_result(None)
        await wait_for(
            lambda: _committed_is(broker, "t-tail-3", partition, last_offset + 1),
            30,
            "all three committed",
        )
    finally:
        await _shut_down(tails, consumer, task, publisher)


async def test_max_pending_polls_must_be_positive(broker: str) -> None:
    publisher = EventPublisher(broker, "test")
    await publisher.start()
    try:
        with pytest.raises(ValueError, match="max_pending_polls must be at least 1, got 0"):
            EventConsumer(
                bootstrap=broker,
                group=None,
                topic_names=[TOPIC],
                publisher=publisher,
                on_batch=lambda records: None,  # type: ignore[arg-type,return-value]
                max_pending_polls=0,
            )
    finally:
        await publisher.stop()


async def test_a_failing_tail_stops_the_consumer_uncommitted(broker: str) -> None:
    await ensure_topics(broker)
    publisher = EventPublisher(broker, "test")
    await publisher.start()
    await _publish(publisher, b"x")

    async def fail() -> None:
        raise RuntimeError("curating failed")

    partitions: set[int] = set()

    async def on_batch(records: list[ConsumerRecord]) -> asyncio.Future[None]:
        partitions.update(r.partition for r in records)
        return asyncio.ensure_future(fail())

    consumer = EventConsumer(
        bootstrap=broker,
        group="t-tail-fail",
        topic_names=[TOPIC],
        publisher=publisher,
        on_batch=on_batch,
    )
    try:
        with pytest.raises(RuntimeError, match="curating failed"):
            await asyncio.wait_for(consumer.run(), 30)
        (partition,) = partitions
        assert await _committed(broker, "t-tail-fail", partition) < 1
    finally:
        await publisher.stop()


async def _committed_is(broker: str, group: str, partition: int, offset: int) -> bool:
    return await _committed(broker, group, partition) == offset


async def test_a_holding_handler_commits_its_offsets_and_is_drained_before_waits(
    broker: str,
) -> None:
    """A handler that holds polls (as the JSON topics' windows do): each tail returns the
    offset to commit, `on_drain(False)` lets held polls go before the consumer would wait at
    `max_pending_polls`, and `on_drain(True)` comes when it stops."""
    await ensure_topics(broker)
    publisher = EventPublisher(broker, "test")
    await publisher.start()
    held: list[tuple[int, int, asyncio.Future[int]]] = []  # (first offset, end, tail)
    drains: list[bool] = []
    partitions: set[int] = set()

    async def on_batch(records: list[ConsumerRecord]) -> asyncio.Future[int]:
        partitions.update(r.partition for r in records)
        tail = asyncio.get_running_loop().create_future()
        held.append((records[0].offset, records[-1].offset + 1, tail))
        return tail

    async def on_drain(stopping: bool) -> None:
        drains.append(stopping)
        for first, _, tail in held:
            if not tail.done():
                tail.set_result(first)  # commit only up to where each poll started

    consumer = EventConsumer(
        bootstrap=broker,
        group="t-tail-hold",
        topic_names=[TOPIC],
        publisher=publisher,
        on_batch=on_batch,
        on_drain=on_drain,
        from_latest=True,  # the module's broker holds other tests' messages on this topic
        max_pending_polls=2,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await consumer.ready.wait()
        await _publish(publisher, b"1")
        await wait_for(lambda: len(held) == 1, 30, "first poll held")
        assert drains == [], "one pending poll is below the limit"
        await _publish(publisher, b"2")
        await wait_for(lambda: drains == [False], 30, "drained before waiting at the limit")
        await _publish(publisher, b"3")
        await wait_for(lambda: len(held) == 3, 30, "third poll held")
        assert drains == [False] and not held[2][2].done()
        await consumer.stop()
        await asyncio.wait_for(task, 30)
        assert drains == [False, True], "drained again on stopping"
        (partition,) = partitions
        # the offset the last tail returned (where its poll started), not the poll's end
        assert await _committed(broker, "t-tail-hold", partition) == held[2][0]
    finally:
        await _shut_down([t for _, _, t in held], consumer, task, publisher)


async def test_a_rebalance_drains_and_commits_before_partitions_move(broker: str) -> None:
    """In a consumer group, a second member joining revokes the first one's partitions: the
    first drains its handler (stopping) and commits what its tails returned before that."""
    await ensure_topics(broker)
    publisher = EventPublisher(broker, "test")
    await publisher.start()
    held: list[tuple[int, asyncio.Future[int]]] = []
    drains: list[bool] = []
    partitions: set[int] = set()

    async def on_batch(records: list[ConsumerRecord]) -> asyncio.Future[int]:
        partitions.update(r.partition for r in records)
        tail = asyncio.get_running_loop().create_future()
        held.append((records[-1].offset + 1, tail))
        return tail

    async def on_drain(stopping: bool) -> None:
        drains.append(stopping)
        for end, tail in held:
            if not tail.done():
                tail.set_result(end)

    def member(handler: Any, drain: Any) -> EventConsumer:
        return EventConsumer(
            bootstrap=broker,
            group="t-tail-rebalance",
            topic_names=[TOPIC],
            publisher=publisher,
            on_batch=handler,
            on_drain=drain,
            group_membership=True,
            from_latest=True,  # the module's broker holds other tests' messages on this topic
            max_pending_polls=100,
        )

    async def idle(records: list[ConsumerRecord]) -> None:
        return None

    async def no_drain(stopping: bool) -> None:
        return None

    first = member(on_batch, on_drain)
    second = member(idle, no_drain)
    tasks = [asyncio.create_task(first.run())]
    try:
        await asyncio.wait_for(first.ready.wait(), 60)
        await _publish(publisher, b"held")
        await wait_for(lambda: len(held) == 1, 30, "a poll held by the first member")
        tasks.append(asyncio.create_task(second.run()))
        await wait_for(lambda: True in drains, 90, "the first member drained on the rebalance")
        assert not tasks[0].done(), "it drained while still running"
        (partition,) = partitions
        assert await _committed(broker, "t-tail-rebalance", partition) == held[0][0]
    finally:
        await second.stop()
        await _shut_down([t for _, t in held], first, tasks[0], publisher)
        await asyncio.gather(*tasks[1:])
