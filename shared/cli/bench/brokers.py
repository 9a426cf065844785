"""`--broker embedded|kafka|both` of `driftloop bench ingest|loop|chaos`: the brokers a run covers,
a local Apache Kafka broker for it, the raw produce/consume ceiling of a broker (messages of the
bench's own size, nothing processed) and the side-by-side table of a `both` run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import pyarrow as pa

    from driftloop.shared.cli.stack.kafka import LocalKafka
    from driftloop.shared.settings import KafkaConnection

CHOICES = ("embedded", "kafka", "both")
HELP = (
    "embedded: the embedded broker (Tansu); kafka: Apache Kafka (KRaft, one node) started "
    "from the jars `make kafka` fetched; both: each in turn, side by side, with the raw "
    "produce/consume ceiling of each broker."
)
LABELS = {"embedded": "embedded (Tansu)", "kafka": "Apache Kafka"}
CEILING_TOPIC = "bench.broker.ceiling"
PRODUCER_BATCH_BYTES = 4 * 1024 * 1024
"""As ingestion's and validation's record-batch publishers buffer per partition (their
RECORD_BATCH_BUFFER): with aiokafka's 16 KiB default, each message of a few KB or more would
travel alone and wait a round trip, and the ceiling would measure latency, not throughput."""
WARMUP_MESSAGES = 500


def brokers_of(choice: str) -> list[str]:
    """The brokers `--broker choice` runs on, in order; a clear error for anything else, and
    for kafka where Java or Kafka's jars are missing (before anything starts)."""
    if choice not in CHOICES:
        raise typer.BadParameter(
            f"{choice!r} is not one of {', '.join(CHOICES)}", param_hint="--broker"
        )
    names = ["embedded", "kafka"] if choice == "both" else [choice]
    if "kafka" in names:
        from driftloop.shared.cli.stack.kafka import missing

        reason = missing()
        if reason is not None:
            raise typer.BadParameter(f"no local Apache Kafka: {reason}", param_hint="--broker")
    return names


@contextmanager
def local_kafka(workdir: Path, say: Callable[[str], None]) -> Iterator[LocalKafka]:
    """A fresh local Apache Kafka broker for one run; always stopped and its data removed.
    Raises Unavailable naming what is missing (Java, or the jars: `make kafka`)."""
    from driftloop.shared.cli.stack import kafka

    started = time.monotonic()
    broker = kafka.start(workdir)
    say(
        f"Apache Kafka {kafka.version(broker.libs)} (KRaft, one node) on {broker.bootstrap}, "
        f"ready in {time.monotonic() - started:.1f}s"
    )
    try:
        yield broker
    finally:
        broker.stop()


@contextmanager
def embedded_broker(log: Path) -> Iterator[str]:
    """A fresh embedded broker process on a free port (its bootstrap address); always stopped."""
    from driftloop.shared.cli.children import die_with_parent
    from driftloop.shared.cli.stack.broker import broker_argv, free_port, wait_for_port

    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            broker_argv(port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def connection_to(broker: str, bootstrap: str) -> KafkaConnection:
    """How a bench client talks to `broker`: idempotent producers where Kafka grants them (as
    the services do), plain ones on the embedded broker (it refuses them)."""
    from driftloop.shared.settings import KafkaConnection

    return KafkaConnection(bootstrap=bootstrap, idempotent=False if broker == "embedded" else None)


async def raw_ceiling(kafka: KafkaConnection, payload: bytes, messages: int) -> dict[str, Any]:
    """Produce `messages` copies of `payload` (acks=all) to a 3-partition topic while a consumer
    reads them back: the most the broker moves with nothing processed."""
    from aiokafka.admin import NewTopic

    from driftloop.shared.bus import connection
    from driftloop.shared.bus.topics import MAX_MESSAGE_BYTES

    admin = connection.admin(kafka)
    await connection.start(admin, kafka)
    try:
        if CEILING_TOPIC not in await admin.list_topics():
            await admin.create_topics([NewTopic(CEILING_TOPIC, 3, 1)])
        await _wait_leaders(admin, CEILING_TOPIC, 3)
    finally:
        await admin.close()
    producer = await connection.start_producer(
        kafka,
        linger_ms=2,
        max_request_size=MAX_MESSAGE_BYTES,
        max_batch_size=PRODUCER_BATCH_BYTES,
        acks="all",
    )
    consumer = connection.consumer(
        kafka,
        CEILING_TOPIC,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
    )
    await connection.start(consumer, kafka)
    try:

        async def move(count: int) -> None:
            async def produce() -> None:
                sends = [await producer.send(CEILING_TOPIC, payload) for _ in range(count)]
                await asyncio.gather(*sends)

            producing = asyncio.create_task(produce())
            seen = 0
            while seen < count:
                got = await consumer.getmany(timeout_ms=200, max_records=500)
                seen += sum(len(records) for records in got.values())
            await producing

        # untimed: connections, metadata, the first fetch, and Kafka's JIT compiler
        await move(min(WARMUP_MESSAGES, messages))
        start = time.perf_counter()
        await move(messages)
        seconds = time.perf_counter() - start
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        "messages": messages,
        "message_bytes": len(payload),
        "seconds": round(seconds, 3),
        "messages_per_s": round(messages / seconds, 1),
        "mb_per_s": round(messages * len(payload) / seconds / 1e6, 2),
    }


async def _wait_leaders(admin: Any, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Until every partition of a topic just created has a leader (Kafka creates them
    asynchronously; a consumer that starts before logs a leader error per partition)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await admin.describe_topics([topic])
        parts = found[0]["partitions"] if found else []
        if len(parts) >= partitions and all(p["leader"] >= 0 for p in parts):
            return
        await asyncio.sleep(0.1)  # poll: the controller is still placing the partitions


def ceilings(payload: bytes, messages: int, workdir: Path) -> dict[str, dict[str, Any]]:
    """The raw ceiling of each broker, each measured on a fresh one started for it (the
    memory-only embedded broker slows as it fills, so never on one a stack has used)."""
    found = {}
    with embedded_broker(workdir / "ceiling-embedded.log") as bootstrap:
        kafka = connection_to("embedded", bootstrap)
        found["embedded"] = asyncio.run(raw_ceiling(kafka, payload, messages))
    with local_kafka(workdir / "ceiling-kafka", lambda text: None) as broker:
        kafka = connection_to("kafka", broker.bootstrap)
        found["kafka"] = asyncio.run(raw_ceiling(kafka, payload, messages))
    return found


def record_batch_message(table: pa.Table) -> bytes:
    """`table` as the raw records topic carries it: an envelope holding an Arrow record batch."""
    from driftloop.protos.events.v1 import events_pb2
    from driftloop.shared.bus import envelope
    from driftloop.shared.records import table_to_ipc

    payload = events_pb2.RecordBatch(
        dataset="bench", batch_id="x" * 32, arrow_ipc=table_to_ipc(table), row_count=table.num_rows
    )
    return envelope.encode(envelope.new_event("bench", payload))


def render_side_by_side(console: Any, title: str, rows: list[tuple[str, Any, Any]]) -> None:
    """One row per figure, one column per broker."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("")
    for name in ("embedded", "kafka"):
        table.add_column(LABELS[name], justify="right")
    for label, embedded, kafka in rows:
        table.add_row(label, _cell(embedded), _cell(kafka))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def ceiling_rows(ceilings: dict[str, dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    e, k = ceilings.get("embedded", {}), ceilings.get("kafka", {})
    size = e.get("message_bytes") or k.get("message_bytes") or 0
    return [
        (
            f"raw ceiling, messages/s ({size:,} B each)",
            e.get("messages_per_s"),
            k.get("messages_per_s"),
        ),
        ("raw ceiling, MB/s", e.get("mb_per_s"), k.get("mb_per_s")),
    ]


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPUs and the 1-minute load average afterwards."""
    return {
        "machine_cpus": len(os.sched_getaffinity(0)),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }
