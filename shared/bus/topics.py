"""The Kafka topics driftloop uses, how many partitions each is created with, the largest
message the bus carries, and the creation of missing topics at start (with a check that the
broker takes messages that large).

Keys: records by dataset, predictions and model events by model name, so ordering holds where
it matters (one dataset's batches, one model's promotions). PARTITIONS is the default layout;
DRIFTLOOP_KAFKA__PARTITIONS changes the count of the keyed (multi-partition) topics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    NoError,
    TopicAlreadyExistsError,
    for_code,
)

from driftloop.shared.bus import connection
from driftloop.shared.bus.connection import KafkaTarget
from driftloop.shared.errors import Conflict, Unauthenticated, Unavailable
from driftloop.shared.settings import KafkaConnection

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
MONITORING_PENDING = "driftloop.monitoring.pending"
"""Monitoring's changelog of the predictions awaiting labels (compacted: one state per request
id), written to the partition of the model's predictions and read back at start."""

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
    MONITORING_PENDING: 3,
}

TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    MONITORING_PENDING: {"cleanup.policy": "compact"},
}
"""Topic-level settings given at creation (a changelog keeps the latest record per key)."""


def planned(kafka: KafkaConnection | None = None) -> dict[str, int]:
    """Partitions per topic that ensure_topics creates: PARTITIONS, with every keyed topic (more
    than one partition there) at the connection's `partitions` setting."""
    if kafka is None:
        return dict(PARTITIONS)
    return {name: kafka.partitions if n > 1 else 1 for name, n in PARTITIONS.items()}


MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest message driftloop produces or fetches (producers' max request size, consumers'
max partition fetch)."""
LIMIT = "max.message.bytes"
"""A topic's message size limit; it defaults to the broker's `message.max.bytes`."""


NEEDED_MESSAGE_BYTES = MAX_MESSAGE_BYTES
"""The `max.message.bytes` every driftloop topic needs: a producer refuses a message whose
record batch (framing included) would exceed MAX_MESSAGE_BYTES, and several messages share a
batch only up to a producer's max batch size (at most 4 MiB here)."""
_TOPIC_OVERRIDE = 1
"""DescribeConfigs' config_source for a value set on the topic itself (DYNAMIC_TOPIC_CONFIG)."""


async def ensure_topics(target: KafkaTarget, *, timeout: float = 30.0) -> None:
    """Create every driftloop topic that is missing, waiting for the broker up to `timeout`;
    then refuse (Conflict) a broker on which a driftloop topic takes smaller messages than
    driftloop sends. Raises Unavailable when the broker cannot be reached, Unauthenticated when
    it refuses the credentials or the TLS handshake fails."""
    kafka = connection.resolve(target)
    deadline = time.monotonic() + timeout
    while True:
        admin = connection.admin(kafka, request_timeout_ms=5000)
        try:
            await admin.start()
            await _create_missing(admin, kafka)
            await check_message_limits(admin, kafka)
            return
        except KafkaConnectionError as exc:
            reason = await connection.explain(kafka, exc)
            if isinstance(reason, Unauthenticated) or time.monotonic() > deadline:
                raise reason from exc
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise Unavailable(f"Kafka broker {kafka.describe()}: {exc}") from exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)  # poll: broker not up yet


async def _create_missing(admin: AIOKafkaAdminClient, kafka: KafkaConnection) -> None:
    existing = set(await admin.list_topics())
    factor = kafka.replication_factor
    wanted = planned(kafka).items()
    missing = [
        NewTopic(name, n, factor, topic_configs=TOPIC_CONFIGS.get(name, {}))
        for name, n in wanted
        if name not in existing
    ]
    if not missing:
        return
    response = await admin.create_topics(missing)
    for name, code, message in response.topic_errors:
        error = for_code(code)
        if error is NoError or error is TopicAlreadyExistsError:
            continue  # created, or another service created it first
        if error.retriable:
            raise error(f"creating topic {name}: {message}")
        raise Conflict(f"Kafka broker {kafka.describe()} refused to create topic {name}: {message}")
    log.info("topics_created", topics=[t.name for t in missing])


async def check_message_limits(admin: AIOKafkaAdminClient, kafka: KafkaConnection) -> None:
    """Raise Conflict when a driftloop topic's `max.message.bytes` (its own, or the broker's
    `message.max.bytes` it inherits) is below NEEDED_MESSAGE_BYTES: sends of large record
    batches would otherwise fail at run time, one by one. A broker that does not answer
    DescribeConfigs (the embedded one; it takes messages of any size) is not checked."""
    wanted = [ConfigResource(ConfigResourceType.TOPIC, name, {LIMIT: None}) for name in PARTITIONS]
    try:
        responses = await admin.describe_configs(wanted)
    except KafkaError as exc:
        log.info("message_limits_unchecked", broker=kafka.bootstrap, reason=str(exc))
        return
    short = []
    for response in responses:
        for code, message, _, name, entries in response.resources:
            if code != 0:
                error = for_code(code)
                if error.retriable:  # e.g. a topic just created, not yet known to the broker
                    raise error(f"describing topic {name}: {message}")
                # e.g. no DescribeConfigs permission on the topic
                log.warning("message_limit_unchecked", topic=name, error=message or code)
                continue
            for entry in entries:
                key, value, source = entry[0], entry[1], entry[3]
                if key == LIMIT and value is not None and int(value) < NEEDED_MESSAGE_BYTES:
                    short.append((name, int(value), source == _TOPIC_OVERRIDE))
    if short:
        raise Conflict(_limit_message(kafka, short))


def _limit_message(kafka: KafkaConnection, short: list[tuple[str, int, bool]]) -> str:
    own = [name for name, _, override in short if override]
    inherited = [(name, value) for name, value, override in short if not override]
    parts = [f"Kafka broker {kafka.describe()} takes smaller messages than driftloop sends"]
    if inherited:
        value = min(v for _, v in inherited)
        which = (
            f"all {len(inherited)} driftloop topics inherit it"
            if len(inherited) == len(PARTITIONS)
            else f"topics {', '.join(n for n, _ in inherited)} inherit it"
        )
        parts.append(
            f"its message.max.bytes is {value}, driftloop needs at least "
            f"{NEEDED_MESSAGE_BYTES} ({which})"
        )
    if own:
        values = {name: value for name, value, _ in short}
        listed = ", ".join(f"{name} has {values[name]}" for name in own)
        parts.append(f"topic max.message.bytes below {NEEDED_MESSAGE_BYTES}: {listed}")
    return (
        "; ".join(parts)
        + f". Raise the broker's message.max.bytes to {NEEDED_MESSAGE_BYTES}, or set the "
        f"topic-level max.message.bytes={NEEDED_MESSAGE_BYTES} on each driftloop topic "
        "(kafka-configs.sh --bootstrap-server HOST:PORT --alter --entity-type topics "
        f"--entity-name TOPIC --add-config max.message.bytes={NEEDED_MESSAGE_BYTES})"
    )


async def partitions(
    consumer: AIOKafkaConsumer,
    names: Iterable[str],
    *,
    timeout: float = 30.0,
    kafka: KafkaConnection | None = None,
) -> list[TopicPartition]:
    """Every partition of the topics `names`, once the broker's metadata shows them all.

    why: Apache Kafka creates topics asynchronously, and a consumer's own metadata knows no
    partitions of a topic it does not read yet (partitions_for_topic answers None there, where
    the embedded broker happens to answer); reading {0} then left partitions 1 and 2 of a
    3-partition topic unread for good. After `timeout` a topic with some partitions is taken as
    it is; one with none raises Unavailable. `kafka`: the connection whose `partitions` setting
    created the topics (the default layout when None).
    """
    found: list[TopicPartition] = []
    deadline = time.monotonic() + timeout
    expecting = planned(kafka)
    for topic in names:
        expected = expecting.get(topic, 1)
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


async def partition_counts(target: KafkaTarget, names: Iterable[str]) -> dict[str, int]:
    """How many partitions each of the topics `names` has on the broker (0: not there)."""
    kafka = connection.resolve(target)
    admin = connection.admin(kafka, request_timeout_ms=5000)
    wanted = list(names)
    try:
        await admin.start()
        described = await admin.describe_topics(wanted)
    except KafkaConnectionError as exc:
        raise await connection.explain(kafka, exc) from exc
    finally:
        await admin.close()
    found = {t["topic"]: len(t["partitions"]) for t in described if not t.get("error_code")}
    return {name: found.get(name, 0) for name in wanted}
