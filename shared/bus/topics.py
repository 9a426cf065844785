"""The Kafka topics driftloop uses, how many partitions each is created with, the largest
message the bus carries, and the creation of missing topics at start.

Keys: records by dataset, predictions and model events by model name, so ordering holds where
it matters (one dataset's batches, one model's promotions).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from driftloop.shared.errors import Unavailable

log = structlog.get_logger(__name__)

INGEST_JSON = "driftloop.ingest.json"
LABELS_JSON = "driftloop.labels.json"
"""Public: any producer writes one JSON object {"model", "request_id", "label"} per message."""
RECORDS_RAW = "driftloop.records.raw"
RECORDS_VALIDATED = "driftloop.records.validated"
RECORDS_REJECTED = "driftloop.records.rejected"
INFERENCE_REQUESTS = "driftloop.inference.requests"
INFERENCE_RESPONSES = "driftloop.inference.responses"
PREDICTIONS = "driftloop.predictions"
LABELS = "driftloop.labels"
DRIFT = "driftloop.drift"
MODELS = "driftloop.models"
DEPLOYMENTS = "driftloop.deployments"
DEADLETTER = "driftloop.deadletter"

PARTITIONS: dict[str, int] = {
    INGEST_JSON: 3,
    LABELS_JSON: 3,
    RECORDS_RAW: 3,
    RECORDS_VALIDATED: 3,
    RECORDS_REJECTED: 1,
    INFERENCE_REQUESTS: 3,
    INFERENCE_RESPONSES: 3,
    PREDICTIONS: 3,
    LABELS: 3,
    DRIFT: 1,
    MODELS: 1,
    DEPLOYMENTS: 1,
    DEADLETTER: 1,
}
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest message driftloop produces or fetches (producers' max request size, consumers'
max partition fetch)."""


async def ensure_topics(bootstrap: str, *, timeout: float = 30.0) -> None:
    """Create every driftloop topic that is missing, waiting for the broker up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name, n, 1) for name, n in PARTITIONS.items() if name not in existing
            ]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass  # another service created them first
                log.info("topics_created", topics=[t.name for t in missing])
            return
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise Unavailable(f"Kafka broker at {bootstrap} unreachable: {exc}") from exc
            await asyncio.sleep(0.5)  # poll: broker not up yet
        finally:
            await admin.close()


async def partitions(
    consumer: AIOKafkaConsumer, names: Iterable[str], *, timeout: float = 30.0
) -> list[TopicPartition]:
    """Every partition of the topics `names`, once the broker's metadata shows them all.

    why: Apache Kafka creates topics asynchronously, and a consumer's own metadata knows no
    partitions of a topic it does not read yet (partitions_for_topic answers None there, where
    the embedded broker happens to answer); reading {0} then left partitions 1 and 2 of a
    3-partition topic unread for good. After `timeout` a topic with some partitions is taken as
    it is; one with none raises Unavailable.
    """
    found: list[TopicPartition] = []
    deadline = time.monotonic() + timeout
    for topic in names:
        expected = PARTITIONS.get(topic, 1)
        while True:
            # the consumer's client fetches the whole cluster's metadata; aiokafka has no
            # public call that returns it
            cluster = await consumer._client.fetch_all_metadata()
            ids = cluster.partitions_for_topic(topic) or set()
            if len(ids) >= expected or (ids and time.monotonic() > deadline):
                break
            if time.monotonic() > deadline:
                raise Unavailable(f"topic {topic} has no partitions on the broker after {timeout}s")
            await asyncio.sleep(0.1)  # poll: topic metadata not yet propagated
        found.extend(TopicPartition(topic, p) for p in sorted(ids))
    return found
