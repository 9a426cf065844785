"""Ingestion scale-out on Apache Kafka: `driftloop up --kafka BOOTSTRAP --scale ingestion=2` over
topics of 4 partitions; a foreign client (confluent-kafka, the murmur2 partitioner Java clients
use) writes JSON rows with unique ids to driftloop.ingest.json, keyed by datasets that cover
every partition, while one ingestion instance is killed with kill -9. The group rebalances, the
supervisor restarts the instance, every row is curated exactly once (read back from the
manifests), each dataset's rows in the order they were written, and the JSON group ends with
nothing left to read.

Only on real Kafka, for the reason tests/e2e/test_scale_out.py gives (the embedded broker was
seen to skip offsets under concurrent producers, and a group commits past such a gap).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafka_broker
import pytest
from confluent_kafka import Producer
from conftest import free_ports
from scale_out_checks import (
    assert_each_row_curated_once,
    instances,
    nothing_left,
    restarted_pid,
    two_members_share,
)
from support import stack_env, start_process, stop_process, wait_until
from test_scale_out import datasets_over_every_partition, declare_schema

from driftloop.shared.bus import topics
from driftloop.shared.cli.chaos.harness import Harness
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PARTITIONS = 4
CHUNK_ROWS = 500
"""Rows per dataset in each of the two chunks written before the kill (the kill falls in the
second), and half the rows per dataset written after it."""
MESSAGE_ROWS = 25
"""Rows per JSON message (a JSON array of row objects)."""
SERVICE = "ingestion"
VICTIM = "ingestion-2"
GROUP = "ingestion-json"
CLI = [sys.executable, "-m", "driftloop.shared.cli"]
BAD_X0 = 1e6
"""x0 of the rows the harness makes out of the declared range (validation rejects them)."""


@pytest.fixture
def scaled_ingestion(
    request: pytest.FixtureRequest, tmp_path: Path, real_kafka: str
) -> Iterator[CommonSettings]:
    """`driftloop up --kafka --scale ingestion=2` on fresh 4-partition topics, healthy; always
    stopped afterwards (cleanly), its topics deleted."""
    kafka_broker.delete_topics(real_kafka)  # created afresh with PARTITIONS partitions
    common = CommonSettings(
        data_dir=tmp_path / "data", ports=free_ports(), kafka_bootstrap=real_kafka
    )
    env = {**stack_env(common), "DRIFTLOOP_KAFKA__PARTITIONS": str(PARTITIONS)}
    up = start_process(
        [*CLI, "up", "--kafka", real_kafka, "--scale", f"{SERVICE}=2"],
        env=env,
        log_path=str(tmp_path / "up.log"),
    )
    try:
        wait_until(lambda: up.poll() is None and stack.read_endpoints(common), 60, "endpoints")
        stack.wait_healthy(common, timeout=180, alive=lambda: up.poll() is None)
        yield common
    finally:
        if (report := getattr(request.node, "report_call", None)) and report.failed:
            for log in sorted((common.data_dir / "logs").glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-40:]
                sys.stdout.write(f"----- {log.name} -----\n" + "\n".join(tail) + "\n")
        stop_process(up, grace=60)
        kafka_broker.delete_topics(real_kafka)
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert not stack.endpoints_path(common).exists(), "endpoints.json removed on stop"


def test_two_ingestion_instances_survive_a_kill_and_curate_every_json_row_once(
    scaled_ingestion: CommonSettings, real_kafka: str
) -> None:
    common = scaled_ingestion
    ingestion = instances(common, SERVICE)
    assert [i["name"] for i in ingestion] == [SERVICE, VICTIM]
    assert len({i["pid"] for i in ingestion}) == 2 and all(i["pid"] for i in ingestion)
    wait_until(
        lambda: two_members_share(real_kafka, GROUP, topics.INGEST_JSON, PARTITIONS),
        120,
        "two members",
    )

    store = open_object_store(common)
    harnesses = [Harness(common, store, name) for name in datasets_over_every_partition()]
    try:
        for h in harnesses:
            declare_schema(h)
        writer = JsonWriter(real_kafka)
        killed = kill_mid_stream(common, writer, harnesses)

        restarted = wait_until(lambda: restarted_pid(common, SERVICE, killed), 120, "restart")
        assert restarted != killed
        address = instances(common, SERVICE)[1]["grpc"]
        wait_until(lambda: stack.health_of(common, SERVICE, address) == "SERVING", 120, "health")

        # the kill is meant to land between the victim's publish of a lingered batch (the
        # second chunk, cut by the linger: its consumer had caught up) and its commit; the
        # redelivery then holds more messages (the rows written after the kill) and must
        # still not curate the chunk a second time (services/ingestion/core/windows.py)
        assert_each_row_curated_once(harnesses, store)

        json_topic = (real_kafka, GROUP, topics.INGEST_JSON)
        wait_until(lambda: nothing_left(*json_topic, PARTITIONS), 120, "the group read all")
        wait_until(lambda: two_members_share(*json_topic, PARTITIONS), 120, "two members again")
    finally:
        for h in harnesses:
            h.close()


# ---- helpers


class JsonWriter:
    """A foreign producer of driftloop.ingest.json: key = dataset, value = a JSON array of rows.
    Idempotent, acks=all, murmur2 partitioning (what Java clients and aiokafka use)."""

    def __init__(self, bootstrap: str) -> None:
        self.errors: list[str] = []
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "linger.ms": 5,
            }
        )

    def write(self, h: Harness, rows: int) -> None:
        """`rows` rows of `h`'s dataset, MESSAGE_ROWS per message, every one acknowledged
        before it is entered in the harness's books."""
        written: list[dict[str, Any]] = []
        done = 0
        while done < rows:
            part = h.rows(min(MESSAGE_ROWS, rows - done))
            self._producer.produce(
                topics.INGEST_JSON,
                json.dumps(part).encode(),
                key=h.model.encode(),
                on_delivery=self._delivered,
            )
            self._producer.poll(0)
            written += part
            done += len(part)
        left = self._producer.flush(60)
        assert left == 0 and not self.errors, (left, self.errors[:3])
        for row in written:
            if row["x0"] == BAD_X0:  # every BAD_EVERY-th row: out of the declared range
                h.sent_bad += 1
            else:
                h.sent_good.add(row["row_id"])

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.errors.append(str(error))


def rows_published(metrics_address: str) -> float:
    """The instance's driftloop_ingestion_rows_total from the JSON topic, summed."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("driftloop_ingestion_rows_total{") and "json-topic" in line
    )


def kill_mid_stream(common: CommonSettings, writer: JsonWriter, harnesses: list[Harness]) -> int:
    """Write CHUNK_ROWS rows into every dataset and wait until they are curated (the victim has
    published and committed its share: its partitions carry half the datasets); write as many
    again and kill -9 the second ingestion instance as soon as it has published rows of them;
    then write 2 x CHUNK_ROWS more (rows on both sides of the kill). Returns its pid."""
    for h in harnesses:
        writer.write(h, CHUNK_ROWS)
    for h in harnesses:
        books = h.wait_accounted(120)
        assert books.curated + books.rejected == h.sent, f"{h.model}: first chunk not curated"
    victim = instances(common, SERVICE)[1]
    baseline = rows_published(victim["metrics"])
    assert baseline > 0, "the victim published its share of the first chunk"
    killed = threading.Event()
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for h in harnesses:
                writer.write(h, CHUNK_ROWS)
            killed.wait(300)
            for h in harnesses:
                writer.write(h, 2 * CHUNK_ROWS)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        wait_until(
            lambda: rows_published(victim["metrics"]) > baseline,
            120,
            "the victim publishing the second chunk",
        )
        os.kill(victim["pid"], signal.SIGKILL)
    finally:
        killed.set()
        feeder.join(300)
    assert not errors, errors
    assert not feeder.is_alive(), "every row was acknowledged"
    return int(victim["pid"])
