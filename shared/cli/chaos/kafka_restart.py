"""The chaos row "broker restart" on Apache Kafka: kill -9 the broker while rows it acknowledged
sit unread on the raw topic (validation paused), then start the same broker on the same log dir.

Kafka keeps its log and the consumer groups' committed offsets across the restart, so the row
must lose nothing: the unread rows are curated afterwards, from where validation had committed,
with no service restarted and nothing to reconcile. (The memory-only embedded broker loses both:
faults.broker_restart, where the stack restarts every service instead.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from driftloop.shared.bus import connection, topics
from driftloop.shared.cli.chaos.infra import pid_of
from driftloop.shared.cli.chaos.steps import Chaos, Row
from driftloop.shared.cli.partitions import every_partition
from driftloop.shared.settings import SERVICES, KafkaConnection

LABEL = "broker restart (kill -9, log kept)"
VALIDATION_GROUP = "validation"
"""Validation's consumer group (services/validation/main.py)."""


def kafka_broker_restart(c: Chaos, row: Row) -> None:
    if c.kafka is None:
        raise RuntimeError("needs the stack on a local Kafka broker (--broker kafka)")
    row.info["label"] = LABEL
    kafka = c.h.common.kafka_connection()
    pids = {name: pid_of(c.h.common, name) for name in SERVICES}
    validation = pids["validation"]
    if validation is None:
        raise RuntimeError("no live pid for validation")
    production = c.h.production()
    os.kill(validation, signal.SIGSTOP)
    try:
        sent_before = set(c.h.sent_good)
        c.h.ingest(c.rows // 2)  # acknowledged by ingestion: on Kafka's log, unread
        unread = c.h.sent_good - sent_before
        ends = asyncio.run(_log_ends(kafka))
        committed = asyncio.run(_committed(kafka))
        t = time.monotonic()
        c.kafka.end(kill=True)
        row.injected = True
        served = [c.h.served_version() for _ in range(5)]
        row.checks["serving_answered_during_outage"] = all(v == production for v in served)
        c.kafka.launch()
        row.info["broker_down_s"] = round(time.monotonic() - t, 2)
        ends_after = asyncio.run(_log_ends(kafka))
        committed_after = asyncio.run(_committed(kafka))
    finally:
        os.kill(validation, signal.SIGCONT)
    row.checks["log_kept"] = sum(ends.values()) > 0 and all(
        ends_after.get(p, 0) >= n for p, n in ends.items()
    )
    row.checks["committed_offsets_kept"] = bool(committed) and all(
        committed_after.get(p, -1) >= n for p, n in committed.items()
    )
    c.h.ingest(c.rows - c.rows // 2)  # retried until ingestion can publish again
    books = c.h.wait_accounted(c.timeout)
    row.recovery_s = round(time.monotonic() - t, 2)
    row.checks["unread_rows_curated_after_restart"] = unread <= books.ids
    row.info["rows_unread_at_kill"] = len(unread)
    row.info["services_restarted"] = [
        name for name, pid in pids.items() if pid_of(c.h.common, name) != pid
    ]
    row.note = "Kafka killed with acknowledged rows unread, restarted on the same log dir"


async def _log_ends(kafka: KafkaConnection) -> dict[Any, int]:
    """The end offset of each partition of the raw topic."""
    consumer = connection.consumer(kafka)
    await connection.start(consumer, kafka)
    try:
        parts = await every_partition(kafka, [topics.RECORDS_RAW])
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def _committed(kafka: KafkaConnection) -> dict[Any, int]:
    """Validation's committed offset on each partition of the raw topic."""
    admin = connection.admin(kafka)
    await connection.start(admin, kafka)
    try:
        offsets = await admin.list_consumer_group_offsets(VALIDATION_GROUP)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic == topics.RECORDS_RAW}
