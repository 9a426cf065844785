"""Single-row messages on driftloop.ingest.json, with ingestion as a real process: they reach
driftloop.records.raw as a few batches of many rows, every row exactly once, and a malformed
message in the middle is dead-lettered without losing its neighbours. Killed mid-stream and
restarted, ingestion publishes each batch again under the same id (so validation curates
every row once)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from support import read_events, start_process, stop_process, wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.stack.broker import wait_for_port
from driftloop.shared.records import ipc_to_table
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

MESSAGES = 2000
BAD_AT = 1000


def ingestion(common: CommonSettings, log: Path, **settings: str) -> Any:
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir.resolve()),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_LOG_JSON": "true",
        **{f"DRIFTLOOP_PORTS__{k.upper()}": str(v) for k, v in common.ports.model_dump().items()},
        **{f"DRIFTLOOP_INGESTION_{k.upper()}": v for k, v in settings.items()},
    }
    proc = start_process(
        [sys.executable, "-m", "driftloop.services.ingestion"], env=env, log_path=str(log)
    )
    wait_for_port("127.0.0.1", common.ports.grpc("ingestion"), timeout=60)
    return proc


def produce(bootstrap: str, dataset: str, values: list[bytes]) -> tuple[int, list[int]]:
    """Send `values` keyed by `dataset`: their partition and offsets."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    offsets: list[int] = []
    partitions: set[int] = set()
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err:
            failed.append(str(err))
        else:
            offsets.append(msg.offset())
            partitions.add(msg.partition())

    for value in values:
        producer.produce(topics.INGEST_JSON, value, dataset.encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0 and not failed, failed
    [partition] = partitions
    return partition, sorted(offsets)


async def raw_batches(bootstrap: str, dataset: str) -> list[events_pb2.RecordBatch]:
    """Every RecordBatch of `dataset` on driftloop.records.raw, up to the topic's end now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await topics.partitions(consumer, [topics.RECORDS_RAW])
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found = []
        async with asyncio.timeout(60):
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [
                        envelope.decode(r.value).record_batch
                        for r in records
                        if r.key == dataset.encode()
                    ]
        return found
    finally:
        await consumer.stop()


def rows_of(batch: events_pb2.RecordBatch) -> list[int]:
    return [int(n) for n in ipc_to_table(batch.arrow_ipc).column("n").to_pylist()]


async def rows_published(bootstrap: str, dataset: str, want: int) -> list[envelope.Envelope]:
    return await read_events(
        bootstrap,
        topics.RECORDS_RAW,
        lambda r, _: r.key == dataset.encode(),
        lambda found: sum(e.record_batch.row_count for e in found) >= want,
    )


def test_single_row_messages_become_few_batches_each_row_once(
    common: CommonSettings, tmp_path: Path
) -> None:
    bootstrap = common.bootstrap()
    asyncio.run(ensure_topics(bootstrap))
    dataset = f"coalesce-{uuid.uuid4().hex[:8]}"
    values = [json.dumps({"n": i, "x": i / 2}).encode() for i in range(MESSAGES)]
    values[BAD_AT] = b'{"n": 1000, "x": '
    proc = ingestion(common, tmp_path / "ingestion.log")
    try:
        produce(bootstrap, dataset, values)
        asyncio.run(rows_published(bootstrap, dataset, MESSAGES - 1))
    finally:
        stop_process(proc)
    assert proc.returncode == 0, (tmp_path / "ingestion.log").read_text()[-2000:]

    batches = asyncio.run(raw_batches(bootstrap, dataset))
    rows = [n for b in batches for n in rows_of(b)]
    assert sorted(rows) == [n for n in range(MESSAGES) if n != BAD_AT], "every row exactly once"
    assert len(batches) <= MESSAGES // 100, f"{len(batches)} raw batches for {MESSAGES} rows"
    assert len({b.batch_id for b in batches}) == len(batches)
    assert all(b.source == "json-topic" for b in batches)

    letters = asyncio.run(
        read_events(
            bootstrap,
            topics.DEADLETTER,
            lambda _, e: e.dead_letter.key == dataset.encode(),
            lambda found: len(found) >= 1,
        )
    )
    [letter] = [e.dead_letter for e in letters]
    assert letter.value == values[BAD_AT] and letter.consumer_group == "ingestion-json"
    assert letter.error.startswith("InvalidInput: ") and "is not valid JSON" in letter.error


def test_a_killed_ingestion_publishes_the_same_batches_again(
    common: CommonSettings, tmp_path: Path
) -> None:
    bootstrap = common.bootstrap()
    asyncio.run(ensure_topics(bootstrap))
    dataset = f"restart-{uuid.uuid4().hex[:8]}"
    window = 70  # not a divisor of the consumer's polls (200 records): commits must not follow them
    # rows up to the end of a window, then one more message that completes it (it is held)
    partition, offsets = produce(
        bootstrap, dataset, [json.dumps({"n": i}).encode() for i in range(1000)]
    )
    last = offsets[-1]
    pad = window - 1 - last % window
    produce(bootstrap, dataset, [json.dumps({"n": 1000 + i}).encode() for i in range(pad + 1)])
    count = 1000 + pad  # rows before the one that completes the last window
    # no linger to speak of: every cut the two processes make is a window end, decided by the
    # offsets alone (bar the held message, let go when the second process stops)
    settings = {"json_window_offsets": str(window), "json_linger_ms": "60000"}
    first = ingestion(common, tmp_path / "first.log", **settings)
    try:
        # killed once it has committed part of the stream: the restart starts from there
        asyncio.run(
            wait_for(
                lambda: _committed(bootstrap, partition, offsets[0] + 300),
                60,
                "offsets committed past the first 300 messages",
            )
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    second = ingestion(common, tmp_path / "second.log", **settings)
    try:
        asyncio.run(
            wait_for(lambda: _unique_rows(bootstrap, dataset, count), 60, "every complete window")
        )
    finally:
        stop_process(second)
    assert second.returncode == 0, (tmp_path / "second.log").read_text()[-2000:]

    batches = asyncio.run(raw_batches(bootstrap, dataset))
    by_id: dict[str, list[int]] = {}
    for batch in batches:
        rows = rows_of(batch)
        assert by_id.setdefault(batch.batch_id, rows) == rows, "an id always means the same rows"
    rows = sorted(n for rows in by_id.values() for n in rows)
    assert rows in (list(range(count)), list(range(count + 1))), "each row once, by batch id"


async def _unique_rows(bootstrap: str, dataset: str, want: int) -> bool:
    batches = await raw_batches(bootstrap, dataset)
    return sum(len(rows_of(b)) for b in {b.batch_id: b for b in batches}.values()) >= want


async def _committed(bootstrap: str, partition: int, at_least: int) -> bool:
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id="ingestion-json", enable_auto_commit=False
    )
    await reader.start()
    try:
        found = await reader.committed(TopicPartition(topics.INGEST_JSON, partition))
        return found is not None and found >= at_least
    finally:
        await reader.stop()
