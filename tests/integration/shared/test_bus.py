"""The bus against both brokers (embedded and real Kafka): publish, consume, commit, dead-letter."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import IncompatibleBrokerVersion
from support import wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.errors import Unavailable

pytestmark = pytest.mark.integration


async def test_events_flow_and_poison_messages_are_dead_lettered(any_broker: str) -> None:
    await ensure_topics(any_broker)
    publisher = EventPublisher(any_broker, "test")
    await publisher.start()
    handled: list[str] = []
    letters: list[events_pb2.DeadLetter] = []

    async def on_drift(event: envelope.Envelope) -> None:
        if event.drift_detected.model == "explode":
            raise ValueError("handler refused this model")
        handled.append(event.drift_detected.model)

    async def on_letter(event: envelope.Envelope) -> None:
        letters.append(event.dead_letter)

    consumer = EventConsumer(
        bootstrap=any_broker,
        group="t-drift",
        topic_names=[topics.DRIFT],
        publisher=publisher,
        on_event=on_drift,
    )
    dlq = EventConsumer(
        bootstrap=any_broker,
        group="t-dlq",
        topic_names=[topics.DEADLETTER],
        publisher=publisher,
        on_event=on_letter,
    )
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(dlq.run())]
    try:
        await asyncio.wait_for(asyncio.gather(consumer.ready.wait(), dlq.ready.wait()), 30)
        good = publisher.event(events_pb2.DriftDetected(model="m1", episode_id="e1"))
        await publisher.publish(topics.DRIFT, "m1", good)
        await publisher.publish(topics.DRIFT, "m1", good)  # re-delivery: handled once
        await publisher.publish_raw(topics.DRIFT, b"m1", b"\x00garbage\xff")
        bad = publisher.event(events_pb2.DriftDetected(model="explode"))
        await publisher.publish(topics.DRIFT, "explode", bad)
        after = publisher.event(events_pb2.DriftDetected(model="m2"))
        await publisher.publish(topics.DRIFT, "m2", after)

        await wait_for(lambda: handled == ["m1", "m2"], 20, "both good events handled")
        await wait_for(lambda: len(letters) == 2, 20, "two dead letters")
        assert {letter.source_topic for letter in letters} == {topics.DRIFT}
        assert any(letter.value == b"\x00garbage\xff" for letter in letters)
        assert any("handler refused" in letter.error for letter in letters)
    finally:
        await consumer.stop()
        await dlq.stop()
        await asyncio.gather(*tasks)
        await publisher.stop()


async def test_committed_offsets_resume_after_restart(any_broker: str) -> None:
    await ensure_topics(any_broker)
    publisher = EventPublisher(any_broker, "test")
    await publisher.start()
    seen: list[str] = []

    async def on_event(event: envelope.Envelope) -> None:
        seen.append(event.model_deployed.version)

    async def run_until(count: int) -> None:
        consumer = EventConsumer(
            bootstrap=any_broker,
            group="t-resume",
            topic_names=[topics.DEPLOYMENTS],
            publisher=publisher,
            on_event=on_event,
        )
        task = asyncio.create_task(consumer.run())
        await wait_for(lambda: len(seen) >= count, 20, f"{count} events")
        await consumer.stop()
        await task

    try:
        for v in ("1", "2"):
            event = publisher.event(events_pb2.ModelDeployed(model="m", version=v))
            await publisher.publish(topics.DEPLOYMENTS, "m", event)
        await run_until(2)
        event = publisher.event(events_pb2.ModelDeployed(model="m", version="3"))
        await publisher.publish(topics.DEPLOYMENTS, "m", event)
        await run_until(3)
        assert seen == ["1", "2", "3"], "a restarted consumer resumes after its commit"
    finally:
        await publisher.stop()


async def test_unavailable_dependency_is_retried_not_dead_lettered(any_broker: str) -> None:
    """A handler whose dependency is down is called again (nothing committed, nothing
    dead-lettered, the consumer keeps running) and the record is handled once it is back."""
    await ensure_topics(any_broker)
    publisher = EventPublisher(any_broker, "test")
    await publisher.start()
    attempts: list[str] = []
    handled: list[str] = []
    letters: list[str] = []

    async def on_event(event: envelope.Envelope) -> None:
        if event.drift_detected.model not in ("first", "second"):
            return  # earlier tests' events on the same broker
        attempts.append(event.drift_detected.model)
        if len(attempts) <= 3:
            raise Unavailable("registry unreachable")
        handled.append(event.drift_detected.model)

    async def on_letter(event: envelope.Envelope) -> None:
        if "unreachable" in event.dead_letter.error:
            letters.append(event.dead_letter.error)

    consumer = EventConsumer(
        bootstrap=any_broker,
        group="t-retry",
        topic_names=[topics.DRIFT],
        publisher=publisher,
        on_event=on_event,
    )
    dlq = EventConsumer(
        bootstrap=any_broker,
        group="t-retry-dlq",
        topic_names=[topics.DEADLETTER],
        publisher=publisher,
        on_event=on_letter,
    )
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(dlq.run())]
    try:
        await asyncio.wait_for(asyncio.gather(consumer.ready.wait(), dlq.ready.wait()), 30)
        for model in ("first", "second"):
            event = publisher.event(events_pb2.DriftDetected(model=model))
            await publisher.publish(topics.DRIFT, model, event)
        await wait_for(lambda: handled == ["first", "second"], 30, "both handled after retries")
        assert attempts == ["first"] * 4 + ["second"], "the record was retried, in order"
        assert not tasks[0].done(), "the consumer survived the outage"
        assert letters == [], "an outage is not a poison message"
    finally:
        await consumer.stop()
        await dlq.stop()
        await asyncio.gather(*tasks)
        await publisher.stop()


async def test_outage_longer_than_budget_stops_the_consumer_uncommitted(any_broker: str) -> None:
    await ensure_topics(any_broker)
    publisher = EventPublisher(any_broker, "test")
    await publisher.start()

    async def always_down(event: envelope.Envelope) -> None:
        if event.model_deployed.model == "b":
            raise Unavailable("store unreachable")

    seen: list[str] = []

    async def recovered(event: envelope.Envelope) -> None:
        if event.model_deployed.model == "b":
            seen.append(event.model_deployed.version)

    def consumer(handler: Callable[[envelope.Envelope], Awaitable[None]]) -> EventConsumer:
        return EventConsumer(
            bootstrap=any_broker,
            group="t-budget",
            topic_names=[topics.DEPLOYMENTS],
            publisher=publisher,
            on_event=handler,
            unavailable_budget_s=1.0,
        )

    try:
        event = publisher.event(events_pb2.ModelDeployed(model="b", version="7"))
        await publisher.publish(topics.DEPLOYMENTS, "b", event)
        with pytest.raises(Unavailable, match="store unreachable"):
            await asyncio.wait_for(consumer(always_down).run(), 60)
        second = consumer(recovered)
        task = asyncio.create_task(second.run())
        try:
            await wait_for(lambda: seen == ["7"], 30, "the uncommitted record is redelivered")
        finally:
            await second.stop()
            await task
    finally:
        await publisher.stop()


async def allow_messages_up_to(bootstrap: str, topic: str, size: int) -> None:
    """Let `topic` take messages of up to `size` bytes: Kafka once the topic's own limit is
    raised (as an operator may); the embedded broker takes any size and cannot be told one."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        limit = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(size)}
        )
        responses = await admin.alter_configs([limit])
    except IncompatibleBrokerVersion:
        return  # the embedded broker: no AlterConfigs, and no size limit to raise
    finally:
        await admin.close()
    errors = [r for response in responses for r in response.resources if r[0] != 0]
    assert not errors, f"raising {topic}'s max.message.bytes failed: {errors}"


async def test_a_message_over_the_limit_is_dead_lettered_unread(any_broker: str) -> None:
    """A broker may take bigger messages than the bus's limit (the embedded broker has no size
    setting; Kafka's topics can be configured above 16 MiB): the bus's own limit is enforced
    where messages are read, so a 40 MiB message is dead-lettered, never handled (#21)."""
    from aiokafka import AIOKafkaProducer

    from driftloop.shared.bus.topics import MAX_MESSAGE_BYTES

    await ensure_topics(any_broker)
    await allow_messages_up_to(any_broker, topics.INGEST_JSON, 64 * 1024 * 1024)
    publisher = EventPublisher(any_broker, "test")
    await publisher.start()
    raw = AIOKafkaProducer(bootstrap_servers=any_broker, max_request_size=64 * 1024 * 1024)
    await raw.start()
    seen: list[int] = []
    letters: list[events_pb2.DeadLetter] = []

    async def on_record(record: object) -> None:
        seen.append(len(record.value))  # type: ignore[attr-defined]

    async def on_letter(event: envelope.Envelope) -> None:
        if event.dead_letter.source_topic == topics.INGEST_JSON:
            letters.append(event.dead_letter)

    consumer = EventConsumer(
        bootstrap=any_broker,
        group="t-big",
        topic_names=[topics.INGEST_JSON],
        publisher=publisher,
        on_record=on_record,
    )
    dlq = EventConsumer(
        bootstrap=any_broker,
        group="t-big-dlq",
        topic_names=[topics.DEADLETTER],
        publisher=publisher,
        on_event=on_letter,
    )
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(dlq.run())]
    try:
        await asyncio.wait_for(asyncio.gather(consumer.ready.wait(), dlq.ready.wait()), 30)
        await raw.send_and_wait(
            topics.INGEST_JSON, b"x" * (40 * 1024 * 1024), key=b"d", partition=0
        )
        await raw.send_and_wait(topics.INGEST_JSON, b'{"a": 1}', key=b"d", partition=0)
        await wait_for(lambda: seen == [8], 60, "the small message handled")
        await wait_for(lambda: len(letters) == 1, 30, "the big one dead-lettered")
        assert letters[0].error.startswith("TooLarge: message is 41943040 bytes")
        assert len(letters[0].value) <= MAX_MESSAGE_BYTES // 2
    finally:
        await consumer.stop()
        await dlq.stop()
        await asyncio.gather(*tasks)
        await raw.stop()
        await publisher.stop()


async def test_a_consumer_started_right_after_topic_creation_reads_every_partition(
    any_broker: str,
) -> None:
    """On Apache Kafka the consumer's own metadata knows no partitions of a topic it does not
    read yet; assigning the {0} fallback left partitions 1 and 2 unread for good (#19)."""
    from aiokafka import AIOKafkaProducer

    await ensure_topics(any_broker)
    publisher = EventPublisher(any_broker, "test")
    await publisher.start()
    raw = AIOKafkaProducer(bootstrap_servers=any_broker)
    await raw.start()
    seen: set[int] = set()

    async def on_record(record: object) -> None:
        seen.add(record.partition)  # type: ignore[attr-defined]

    consumer = EventConsumer(
        bootstrap=any_broker,
        group="t-partitions",
        topic_names=[topics.INGEST_JSON],
        publisher=publisher,
        on_record=on_record,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 30)
        for partition in range(topics.PARTITIONS[topics.INGEST_JSON]):
            await raw.send_and_wait(topics.INGEST_JSON, b"{}", key=b"d", partition=partition)
        await wait_for(lambda: seen == {0, 1, 2}, 30, "a record from every partition")
    finally:
        await consumer.stop()
        await task
        await raw.stop()
        await publisher.stop()
