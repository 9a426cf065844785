"""Scale-out on Apache Kafka: `driftloop up --kafka BOOTSTRAP --scale validation=2` over topics
of 4 partitions, rows with unique ids streamed into datasets whose keys cover every partition,
one validation instance killed -9 mid-stream. The group rebalances, the supervisor restarts the
instance, every row is curated exactly once (read back from the manifests), each dataset's rows
are curated in the order they were ingested (records are keyed by dataset, DESIGN.md section 4),
the group ends with nothing left to read, and the loop still closes.

Only on real Kafka: the embedded broker was seen to skip offsets while several producers write
one partition at once (README, after "The bus is never the source of truth"); a consumer group
commits past such a gap, so rows would go missing for the broker's sake, not the stack's.
"""

from __future__ import annotations

import asyncio
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
from aiokafka.partitioner import DefaultPartitioner
from conftest import free_ports
from scale_out_checks import (
    assert_each_row_curated_once,
    committed_offsets,
    instances,
    nothing_left,
    restarted_pid,
    two_members_share,
)
from support import stack_env, start_process, stop_process, wait_until

from driftloop.protos.validation.v1 import validation_pb2, validation_pb2_grpc
from driftloop.shared.bus import topics
from driftloop.shared.cli.bench.chaos import SETUP_ROWS
from driftloop.shared.cli.chaos.harness import SEGMENTS, Harness
from driftloop.shared.cli.commands.status import collect_status
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PARTITIONS = 4
DATASETS_PER_PARTITION = 2
ROWS_EACH_SIDE = 750
"""Rows per dataset ingested before the kill, and as many after it."""
GROUP = "validation"
VICTIM = "validation-2"
CLI = [sys.executable, "-m", "driftloop.shared.cli"]


def datasets_over_every_partition() -> list[str]:
    """Dataset names whose keys land on every partition of a 4-partition topic (the producers'
    default partitioner, murmur2 of the key), DATASETS_PER_PARTITION on each."""
    partitioner = DefaultPartitioner()
    parts = list(range(PARTITIONS))
    chosen: dict[int, list[str]] = {p: [] for p in parts}
    i = 0
    while any(len(names) < DATASETS_PER_PARTITION for names in chosen.values()):
        name = f"scale-{i}"
        names = chosen[partitioner(name.encode(), parts, parts)]
        if len(names) < DATASETS_PER_PARTITION:
            names.append(name)
        i += 1
    return [name for p in parts for name in chosen[p]]


@pytest.fixture
def scaled_stack(
    request: pytest.FixtureRequest, tmp_path: Path, real_kafka: str
) -> Iterator[tuple[CommonSettings, Any]]:
    """`driftloop up --kafka --scale validation=2` on fresh 4-partition topics, healthy; always
    stopped afterwards (cleanly), its topics deleted."""
    kafka_broker.delete_topics(real_kafka)  # created afresh with PARTITIONS partitions
    common = CommonSettings(
        data_dir=tmp_path / "data", ports=free_ports(), kafka_bootstrap=real_kafka
    )
    env = {**stack_env(common), "DRIFTLOOP_KAFKA__PARTITIONS": str(PARTITIONS)}
    up = start_process(
        [*CLI, "up", "--kafka", real_kafka, "--scale", "validation=2"],
        env=env,
        log_path=str(tmp_path / "up.log"),
    )
    try:
        wait_until(lambda: up.poll() is None and stack.read_endpoints(common), 60, "endpoints")
        stack.wait_healthy(common, timeout=180, alive=lambda: up.poll() is None)
        yield common, up
    finally:
        if (report := getattr(request.node, "report_call", None)) and report.failed:
            for log in sorted((common.data_dir / "logs").glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-40:]
                sys.stdout.write(f"----- {log.name} -----\n" + "\n".join(tail) + "\n")
        stop_process(up, grace=60)
        kafka_broker.delete_topics(real_kafka)
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert not stack.endpoints_path(common).exists(), "endpoints.json removed on stop"


def test_two_validation_instances_survive_a_kill_and_curate_every_row_once(
    scaled_stack: tuple[CommonSettings, Any], real_kafka: str
) -> None:
    common, _ = scaled_stack
    validation = instances(common, GROUP)
    assert [i["name"] for i in validation] == [GROUP, VICTIM]
    assert len({i["pid"] for i in validation}) == 2 and all(i["pid"] for i in validation)
    assert len({i["grpc"] for i in validation} | {i["metrics"] for i in validation}) == 4
    status = collect_status(common)["services"]
    assert status[VICTIM] == {
        "address": validation[1]["grpc"],
        "status": "SERVING",
        "healthy": True,
    }, "`driftloop status` shows every instance"
    counts = asyncio.run(topics.partition_counts(real_kafka, [topics.RECORDS_RAW]))
    assert counts == {topics.RECORDS_RAW: PARTITIONS}

    store = open_object_store(common)
    names = datasets_over_every_partition()
    harnesses = [Harness(common, store, name) for name in names]
    try:
        loop = harnesses[0]
        # declares the schema and the model; auto-training makes v1, which serving loads
        assert loop.setup(SETUP_ROWS), "v1 trained and serves"
        for h in harnesses[1:]:
            declare_schema(h)

        killed = kill_mid_stream(common, harnesses)

        restarted = wait_until(lambda: restarted_pid(common, GROUP, killed), 120, "the restart")
        assert restarted != killed
        address = instances(common, GROUP)[1]["grpc"]
        wait_until(lambda: stack.health_of(common, GROUP, address) == "SERVING", 120, "health")

        assert_each_row_curated_once(harnesses, store)

        raw = (real_kafka, GROUP, topics.RECORDS_RAW)
        wait_until(lambda: nothing_left(*raw, PARTITIONS), 120, "the group read everything")
        committed = committed_offsets(*raw)
        assert len(committed) == PARTITIONS and all(committed.values()), (
            f"rows went through every partition: {committed}"
        )
        wait_until(lambda: two_members_share(*raw, PARTITIONS), 120, "two members sharing")

        before = loop.production()
        run_id = loop.start_run("scale-out: after the kill")
        closed, version = loop.close_loop(run_id, before, 300)
        assert closed, f"the loop did not close after the kill: {version}"
    finally:
        for h in harnesses:
            h.close()


def test_up_refuses_more_instances_than_partitions(real_kafka: str, tmp_path: Path) -> None:
    kafka_broker.delete_topics(real_kafka)
    common = CommonSettings(
        data_dir=tmp_path / "data", ports=free_ports(), kafka_bootstrap=real_kafka
    )
    env = {**stack_env(common), "DRIFTLOOP_KAFKA__PARTITIONS": "2"}
    up = start_process(
        [*CLI, "up", "--kafka", real_kafka, "--scale", "validation=3"],
        env=env,
        log_path=str(tmp_path / "up.log"),
    )
    try:
        wait_until(lambda: up.poll() is not None, 120, "up to refuse")
    finally:
        stop_process(up)
        kafka_broker.delete_topics(real_kafka)
    said = " ".join((tmp_path / "up.log").read_text().split())
    assert up.returncode == 1
    assert f"cannot scale validation to 3: topic {topics.RECORDS_RAW} has 2 partitions" in said
    assert "DRIFTLOOP_KAFKA__PARTITIONS=3" in said
    assert not (common.data_dir / "logs" / "validation.log").exists(), "no service started"


# ---- helpers


def declare_schema(h: Harness) -> None:
    stub = validation_pb2_grpc.ValidationServiceStub(h.channel("validation"))
    columns = [
        validation_pb2.ColumnSchema(name="row_id", type="string", required=True),
        validation_pb2.ColumnSchema(name="x0", type="float", required=True, min=-100, max=100),
        validation_pb2.ColumnSchema(name="x1", type="float", required=True),
        validation_pb2.ColumnSchema(
            name="segment", type="string", required=True, categories=SEGMENTS
        ),
        validation_pb2.ColumnSchema(name="label", type="string", required=True),
    ]
    schema = validation_pb2.DatasetSchema(dataset=h.model, columns=columns)
    h.retry(lambda: stub.PutSchema(schema, metadata=h.meta, timeout=10))


def rows_validated(metrics_address: str) -> float:
    """The instance's driftloop_validation_rows_total, every dataset and outcome summed."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("driftloop_validation_rows_total{")
    )


def kill_mid_stream(common: CommonSettings, harnesses: list[Harness]) -> int:
    """Stream ROWS_EACH_SIDE rows into every dataset, kill -9 the second validation instance
    once it has validated more than ROWS_EACH_SIDE rows of that stream (its partitions carry
    half the datasets), then stream as many again; returns its pid.
    The second half waits for the kill, so rows flow on both sides of it."""
    victim = instances(common, GROUP)[1]
    baseline = rows_validated(victim["metrics"])
    killed = threading.Event()
    errors: list[BaseException] = []

    def feed(h: Harness) -> None:
        try:
            h.ingest(ROWS_EACH_SIDE)
            killed.wait(300)
            h.ingest(ROWS_EACH_SIDE)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    feeders = [threading.Thread(target=feed, args=(h,), daemon=True) for h in harnesses]
    for thread in feeders:
        thread.start()
    try:
        wait_until(
            lambda: rows_validated(victim["metrics"]) > baseline + ROWS_EACH_SIDE,
            120,
            "the victim validating the stream",
        )
        os.kill(victim["pid"], signal.SIGKILL)
    finally:
        killed.set()
        for thread in feeders:
            thread.join(300)
    assert not errors, errors
    assert not any(t.is_alive() for t in feeders), "every row was acknowledged"
    return int(victim["pid"])
