"""Idempotent producers: on Apache Kafka every driftloop producer gets a producer id; the embedded
broker refuses InitProducerId, so there the producers fall back to plain ones (or refuse to start
when the setting requires idempotence)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from support import wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.errors import Unavailable
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def broker_kind(request: pytest.FixtureRequest) -> str:
    """Which broker `any_broker` is in this run ("embedded" or "kafka")."""
    return str(request.node.callspec.params["any_broker"])


async def test_producers_are_idempotent_where_the_broker_allows(
    common: CommonSettings, broker_kind: str
) -> None:
    """A service's publisher, built from its settings as main.py builds it, is idempotent on
    Kafka; on the embedded broker it is a plain producer and the bus works as before."""
    kafka = common.kafka_connection()
    assert kafka.idempotent is None, "unset: asked of the broker"
    await ensure_topics(kafka)
    publisher = EventPublisher(kafka, "test")
    await publisher.start()
    seen: list[str] = []

    async def on_drift(event: envelope.Envelope) -> None:
        seen.append(event.drift_detected.model)

    consumer = EventConsumer(
        bootstrap=kafka,
        group="t-idempotence",
        topic_names=[topics.DRIFT],
        publisher=publisher,
        on_event=on_drift,
    )
    task = asyncio.create_task(consumer.run())
    try:
        assert publisher.idempotent is (broker_kind == "kafka")
        await asyncio.wait_for(consumer.ready.wait(), 30)
        for model in ("m1", "m2", "m3"):
            event = publisher.event(events_pb2.DriftDetected(model=model))
            await publisher.publish(topics.DRIFT, model, event)
        await wait_for(lambda: len(seen) == 3, 20, "three events handled")
        assert sorted(seen) == ["m1", "m2", "m3"]
    finally:
        await consumer.stop()
        await task
        await publisher.stop()


async def test_required_idempotence_on_a_broker_that_refuses_it_is_a_clear_error(
    common: CommonSettings, broker_kind: str
) -> None:
    kafka = dataclasses.replace(common.kafka_connection(), idempotent=True)
    publisher = EventPublisher(kafka, "test")
    if broker_kind == "kafka":
        await publisher.start()
        assert publisher.idempotent
        await publisher.stop()
        return
    with pytest.raises(Unavailable) as refused:
        await asyncio.wait_for(publisher.start(), 30)
    message = str(refused.value)
    assert kafka.bootstrap in message
    assert "refused an idempotent producer" in message
    assert "DRIFTLOOP_KAFKA__IDEMPOTENT=false" in message


async def test_idempotence_switched_off_gives_plain_producers(common: CommonSettings) -> None:
    kafka = dataclasses.replace(common.kafka_connection(), idempotent=False)
    await ensure_topics(kafka)
    publisher = EventPublisher(kafka, "test")
    await publisher.start()
    try:
        assert not publisher.idempotent
        event = publisher.event(events_pb2.DriftDetected(model="m"))
        await publisher.publish(topics.DRIFT, "m", event)
    finally:
        await publisher.stop()
