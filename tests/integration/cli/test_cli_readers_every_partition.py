"""The CLI's read-only Kafka readers (`status` lag and latest events, `trace`, `deadletter`, the
chaos event finder) read every partition the broker has, not the default layout's 3: on topics
of 6 partitions, events written to partitions 3-5 only are seen. Both brokers.

The keyed topics get their 6 partitions from DRIFTLOOP_KAFKA__PARTITIONS; the event topics
(1 partition in driftloop's layout) are created with 6 beforehand, as an ops team may have done
on their own cluster. The readers run with the default settings (a shell without the stack's
DRIFTLOOP_KAFKA__PARTITIONS) and with the stack's.
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import NewTopic

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import connection, envelope, topics
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.chaos.events import _find
from driftloop.shared.cli.commands.deadletter import read_letters
from driftloop.shared.cli.commands.status import CONSUMER_GROUPS, _from_broker
from driftloop.shared.cli.commands.trace import read_chain_events
from driftloop.shared.settings import KafkaConnection

pytestmark = pytest.mark.integration

PARTITIONS = 6
HIGH = (3, 4, 5)
"""The partitions a reader that assumes 3 never reads."""
EVENT_TOPICS = (topics.DRIFT, topics.MODELS, topics.DEPLOYMENTS, topics.DEADLETTER)


async def _wide_topics(kafka: KafkaConnection) -> None:
    admin = connection.admin(kafka)
    await connection.start(admin, kafka)
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(t, PARTITIONS, 1) for t in EVENT_TOPICS if t not in existing]
        if wanted:
            await admin.create_topics(wanted)
    finally:
        await admin.close()
    await ensure_topics(kafka)
    counts = await topics.partition_counts(kafka, [*topics.PARTITIONS])
    keyed = {t for t, n in topics.PARTITIONS.items() if n > 1}
    assert {t: n for t, n in counts.items() if t in keyed | set(EVENT_TOPICS)} == dict.fromkeys(
        keyed | set(EVENT_TOPICS), PARTITIONS
    ), counts


async def _write(kafka: KafkaConnection, correlation_id: str) -> dict[str, int]:
    """One chain (drift, promotion, deployment) and one dead letter on partitions 3-5 only,
    one message on each of partitions 3-5 of every topic `status` counts lag on; returns the
    messages written per topic."""
    producer = await connection.start_producer(kafka, acks="all")
    written: dict[str, int] = {}
    source = topics.RECORDS_RAW

    async def send(topic: str, value: bytes, partition: int) -> None:
        await producer.send_and_wait(topic, value, key=b"m", partition=partition)
        written[topic] = written.get(topic, 0) + 1

    def event(payload: object) -> bytes:
        found = envelope.new_event("test", payload, correlation_id=correlation_id)
        return envelope.encode(found)

    try:
        await send(topics.DRIFT, event(events_pb2.DriftDetected(model="m", episode_id="ep")), 4)
        await send(topics.MODELS, event(events_pb2.ModelPromoted(model="m", version="7")), 5)
        await send(topics.DEPLOYMENTS, event(events_pb2.ModelDeployed(model="m", version="7")), 3)
        letter = events_pb2.DeadLetter(
            source_topic=source, partition=5, offset=0, key=b"m", value=b"x", error="bad"
        )
        await send(topics.DEADLETTER, event(letter), 5)
        for names in CONSUMER_GROUPS.values():
            for topic in names:
                if topic in EVENT_TOPICS:
                    continue
                for partition in HIGH:
                    if written.get(topic, 0) < len(HIGH):
                        await send(topic, b"not an envelope", partition)
    finally:
        await producer.stop()
    return written


async def test_cli_readers_see_partitions_3_to_5(any_broker: str) -> None:
    stack = KafkaConnection(bootstrap=any_broker, partitions=PARTITIONS)
    await _wide_topics(stack)
    correlation_id = f"corr-{uuid.uuid4().hex}"
    written = await _write(stack, correlation_id)

    for reader in (KafkaConnection(bootstrap=any_broker), stack):
        lag, latest = await _from_broker(reader)
        for group, names in CONSUMER_GROUPS.items():
            for topic in names:
                # nothing committed: the lag is every message written
                assert lag[group][topic] == written[topic], (group, topic, lag[group])
        assert latest["drift"]["correlation_id"] == correlation_id
        assert latest["promotion"]["version"] == "7"
        assert latest["deployment"]["version"] == "7"

        chain = await read_chain_events(reader, correlation_id)
        assert sorted(e.type for e in chain) == [
            "DriftDetected",
            "ModelDeployed",
            "ModelPromoted",
        ]

        letters = await read_letters(reader)
        assert [(x.source_topic, x.partition, x.error) for x in letters] == [
            (topics.RECORDS_RAW, 5, "bad")
        ]

        found = await _find(
            reader,
            topics.MODELS,
            lambda e: e.correlation_id == correlation_id,
            since=0.0,
            timeout=10,
        )
        assert found is not None and found.type == "ModelPromoted"
