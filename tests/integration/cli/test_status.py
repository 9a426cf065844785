"""`driftloop status` reads lag and the latest loop events from the real broker."""

from __future__ import annotations

import pytest

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import topics
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.commands.status import _from_broker

pytestmark = pytest.mark.integration


async def test_latest_events_and_lag_come_from_the_topics(broker: str) -> None:
    await ensure_topics(broker)
    publisher = EventPublisher(broker, "test")
    await publisher.start()
    try:
        for version in ("1", "2", "3"):
            event = publisher.event(events_pb2.ModelDeployed(model="m", version=version))
            await publisher.publish(topics.DEPLOYMENTS, "m", event)
        drift = publisher.event(events_pb2.DriftDetected(model="m", episode_id="ep"))
        await publisher.publish(topics.DRIFT, "m", drift)
        await publisher.publish_raw(topics.MODELS, b"m", b"not an envelope")
    finally:
        await publisher.stop()

    lag, latest = await _from_broker(broker)

    assert latest["deployment"]["version"] == "3"
    assert latest["drift"]["episode_id"] == "ep"
    assert latest["drift"]["correlation_id"] == drift.correlation_id
    assert "promotion" not in latest, "undecodable messages are skipped, not shown"
    assert lag["monitoring"][topics.DEPLOYMENTS] >= 2, "nothing committed: lag is the backlog"
    assert set(lag) == {
        "validation",
        "ingestion-json",
        "ingestion-labels-json",
        "training",
        "training-auto",
        "monitoring",
        "serving-inference",
    }
