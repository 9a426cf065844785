"""Chaos helpers on the bus: find an event on a topic, publish poison, count dead letters."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import datetime

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import connection, envelope, topics
from driftloop.shared.bus.connection import KafkaTarget
from driftloop.shared.bus.topics import MAX_MESSAGE_BYTES
from driftloop.shared.cli.commands.deadletter import read_letters
from driftloop.shared.cli.partitions import every_partition

HUGE_BYTES = 4 * 1024 * 1024


def find(
    bootstrap: KafkaTarget,
    topic: str,
    predicate: Callable[[envelope.Envelope], bool],
    *,
    since: float,
    timeout: float,
) -> envelope.Envelope | None:
    """The first envelope on `topic` that occurred at/after `since` (epoch s) and matches."""
    return asyncio.run(_find(bootstrap, topic, predicate, since, timeout))


async def _find(
    bootstrap: KafkaTarget,
    topic: str,
    predicate: Callable[[envelope.Envelope], bool],
    since: float,
    timeout: float,
) -> envelope.Envelope | None:
    consumer = connection.consumer(
        bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await connection.start(consumer, bootstrap)
    try:
        tps = await every_partition(bootstrap, [topic])
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    try:
                        event = envelope.decode(record.value)
                    except Exception:  # noqa: BLE001 - poison may sit on any topic
                        continue
                    at = event.occurred_at.ToNanoseconds() / 1e9
                    if at >= since - 1 and predicate(event):
                        return event
        return None
    finally:
        await consumer.stop()


def send_poison(bootstrap: KafkaTarget, names: list[str], model: str) -> int:
    """Per topic: random bytes, a well-formed envelope of the wrong type (or, on the JSON
    topic, valid JSON that is not rows), and a huge random payload. Returns messages sent."""
    return asyncio.run(_send_poison(bootstrap, names, model))


async def _send_poison(bootstrap: KafkaTarget, names: list[str], model: str) -> int:
    """Random bytes, a wrong event type (or JSON that is not a row) and an oversized message on
    every topic; returns how many were written."""
    wrong = envelope.encode(
        envelope.new_event("chaos", events_pb2.ModelRejected(model=model, version="0"))
    )
    sent = 0
    for topic in names:
        messages = [
            os.urandom(64),
            b"[1, 2, 3]" if topic == topics.INGEST_JSON else wrong,
            os.urandom(HUGE_BYTES),
        ]
        await _publish(bootstrap, topic, model, messages)
        sent += len(messages)
    return sent


def wait_letters(
    bootstrap: KafkaTarget, names: list[str], since: float, timeout: float, at_least: int = 2
) -> dict[str, int]:
    """Dead letters per source topic written at/after `since`, once each topic has
    `at_least` of them (or at the deadline)."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        letters = asyncio.run(read_letters(bootstrap, timeout=20))
        counts = {}
        for letter in letters:
            if datetime.fromisoformat(letter.at).timestamp() >= since - 1:
                counts[letter.source_topic] = counts.get(letter.source_topic, 0) + 1
        if all(counts.get(t, 0) >= at_least for t in names):
            break
        time.sleep(1)  # poll: consumers dead-letter asynchronously
    return counts


def publish(bootstrap: KafkaTarget, topic: str, key: str, values: list[bytes]) -> None:
    """Write `values` to `topic` under `key`, in order, each acknowledged."""
    asyncio.run(_publish(bootstrap, topic, key, values))


async def _publish(bootstrap: KafkaTarget, topic: str, key: str, values: list[bytes]) -> None:
    producer = await connection.start_producer(
        bootstrap, max_request_size=MAX_MESSAGE_BYTES, acks="all"
    )
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()
