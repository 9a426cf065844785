"""driftloop's local Apache Kafka launcher (shared/cli/stack/kafka.py, what `bench ... --broker
kafka` runs) with its own defaults: it starts a broker from the fetched jars, a restart after
kill -9 brings back the same broker with its messages and committed offsets (Kafka keeps its log,
unlike the embedded broker), and stop removes the data."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kafka_broker
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from driftloop.shared.bus import connection
from driftloop.shared.cli.stack import kafka

pytestmark = pytest.mark.integration

TOPIC = "launcher.kept"
GROUP = "launcher-group"


async def produce_and_commit(bootstrap: str) -> None:
    admin = connection.admin(bootstrap)
    await connection.start(admin, bootstrap)
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = await connection.start_producer(bootstrap, acks="all")
    try:
        for i in range(3):
            await producer.send_and_wait(TOPIC, f"m{i}".encode())
    finally:
        await producer.stop()
    consumer = connection.consumer(bootstrap, group_id=GROUP, enable_auto_commit=False)
    await connection.start(consumer, bootstrap)
    try:
        consumer.assign([TopicPartition(TOPIC, 0)])
        await consumer.commit({TopicPartition(TOPIC, 0): 2})
    finally:
        await consumer.stop()


async def read_back(bootstrap: str) -> tuple[list[bytes], int | None]:
    """Every message of the topic, and the group's committed offset."""
    consumer = connection.consumer(bootstrap, group_id=GROUP, enable_auto_commit=False)
    await connection.start(consumer, bootstrap)
    part = TopicPartition(TOPIC, 0)
    try:
        consumer.assign([part])
        committed = await consumer.committed(part)
        await consumer.seek_to_beginning(part)
        got = await consumer.getmany(part, timeout_ms=10_000)
        return [r.value for r in got.get(part, []) if r.value is not None], committed
    finally:
        await consumer.stop()


def test_a_restarted_broker_keeps_its_log_and_offsets_and_stop_removes_them(
    tmp_path: Path,
) -> None:
    reason = kafka_broker.missing()
    if reason is not None:
        kafka_broker.skip_or_fail(reason)
    broker = kafka.start(tmp_path / "kafka", libs=kafka_broker.LIBS, heap="512m", fast_start=True)
    try:
        assert (tmp_path / "kafka" / "log4j2.properties").is_file(), "its own log4j config"
        asyncio.run(produce_and_commit(broker.bootstrap))
        first_pid, address = broker.pid, broker.bootstrap

        broker.restart(kill=True)

        assert broker.pid != first_pid and broker.bootstrap == address
        messages, committed = asyncio.run(read_back(broker.bootstrap))
        assert messages == [b"m0", b"m1", b"m2"]
        assert committed == 2
    finally:
        broker.stop()
    assert broker.process is not None and broker.process.poll() is not None
    assert not broker.data_dir.exists()
    assert "KafkaRaftServer" in broker.log.read_text(), "the broker's log stays for reading"
