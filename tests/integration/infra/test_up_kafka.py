"""`driftloop up --kafka HOST:PORT` against Apache Kafka 4.1.1 (the session's KRaft broker): the six
services run with no embedded broker, the topics get the README's partition counts, and a broker
that takes smaller messages than driftloop sends is refused with what to change."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kafka_broker
import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from conftest import free_ports
from support import stack_env, start_process, stop_process, wait_until

from driftloop.shared.bus import topics
from driftloop.shared.bus.topics import NEEDED_MESSAGE_BYTES, ensure_topics
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.errors import Conflict
from driftloop.shared.settings import CommonSettings, KafkaConnection

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[3] / "README.md"
KAFKA_DEFAULT_LIMIT = 1048588
"""Apache Kafka's own default message.max.bytes."""
CLI = [sys.executable, "-m", "driftloop.shared.cli"]


def readme_partitions() -> dict[str, int]:
    """Partitions per topic, as the README's topics table lists them."""
    rows = re.findall(r"^\| `(driftloop\.[a-z.]+)` \| (\d+) \|", README.read_text(), re.M)
    return {name: int(count) for name, count in rows}


def broker_partitions(bootstrap: str) -> dict[str, int]:
    found = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return {name: len(t.partitions) for name, t in found.items() if name.startswith("driftloop.")}


def test_the_readme_lists_every_topic_with_the_partitions_driftloop_creates() -> None:
    assert readme_partitions() == topics.PARTITIONS


def test_up_runs_the_six_services_on_external_kafka(real_kafka: str, tmp_path: Path) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", ports=free_ports())
    up = start_process(
        [*CLI, "up", "--kafka", real_kafka],
        env=stack_env(common),
        log_path=str(tmp_path / "up.log"),
    )
    try:
        wait_until(lambda: up.poll() is None and stack.read_endpoints(common), 60, "endpoints")
        stack.wait_healthy(common, timeout=180, alive=lambda: up.poll() is None)
        found = stack.read_endpoints(common) or {}
        assert found["broker"] == real_kafka
        assert found["embedded_broker"] is False and found["broker_pid"] is None
        assert set(stack.recorded_pids(found)) == {"up", *stack.SERVICES}, "no broker process"

        status = subprocess.run(
            [*CLI, "status", "--json"],
            env={**os.environ, **stack_env(common)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert all(s["healthy"] for s in report["services"].values()), report["services"]
        assert report["broker"] == {"bootstrap": real_kafka, "reachable": True}
        assert "validation" in report["lag"], "lag read from Kafka's committed offsets"
        assert broker_partitions(real_kafka) == readme_partitions()
        logs = common.data_dir / "logs"
        assert not (logs / "broker.log").exists()
        for name in stack.SERVICES:
            assert "idempotent_producer_refused" not in (logs / f"{name}.log").read_text()
    finally:
        stop_process(up, grace=60)
        kafka_broker.delete_topics(real_kafka)
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert not stack.endpoints_path(common).exists()


@pytest.fixture
def small_message_limit(real_kafka: str) -> Iterator[str]:
    """The session's broker with message.max.bytes lowered to Kafka's default, as a dynamic
    broker config (which outranks server.properties); removed afterwards, and the topics too."""
    admin = AdminClient({"bootstrap.servers": real_kafka})
    _set_broker_limit(admin, str(KAFKA_DEFAULT_LIMIT))
    try:
        wait_until(lambda: _broker_limit(admin) == KAFKA_DEFAULT_LIMIT, 30, "the lowered limit")
        yield real_kafka
    finally:
        _set_broker_limit(admin, None)
        wait_until(
            lambda: _broker_limit(admin) == kafka_broker.MESSAGE_MAX_BYTES, 30, "limit restored"
        )
        kafka_broker.delete_topics(real_kafka)


def test_up_refuses_a_broker_that_takes_smaller_messages(
    small_message_limit: str, tmp_path: Path
) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", ports=free_ports())
    up = subprocess.run(
        [*CLI, "up", "--kafka", small_message_limit],
        env={**os.environ, **stack_env(common)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    message = " ".join(up.stderr.split())
    assert up.returncode == 1, up.stdout + up.stderr
    assert f"Kafka broker {small_message_limit}" in message
    assert f"message.max.bytes is {KAFKA_DEFAULT_LIMIT}" in message
    assert f"needs at least {NEEDED_MESSAGE_BYTES}" in message
    assert f"topic-level max.message.bytes={NEEDED_MESSAGE_BYTES}" in message
    assert not stack.endpoints_path(common).exists()
    assert not any((common.data_dir / "logs").glob("ingestion*")), "no service was started"


async def test_a_topic_level_limit_is_the_way_round_a_small_broker_limit(
    small_message_limit: str,
) -> None:
    with pytest.raises(Conflict):
        await ensure_topics(small_message_limit)
    admin = AdminClient({"bootstrap.servers": small_message_limit})
    _set_topic_limits(admin, {name: str(NEEDED_MESSAGE_BYTES) for name in topics.PARTITIONS})
    await ensure_topics(small_message_limit)  # every topic has its own, large enough limit

    _set_topic_limits(admin, {topics.RECORDS_RAW: "1000000"})
    with pytest.raises(Conflict) as short:
        await ensure_topics(small_message_limit)
    message = str(short.value)
    assert f"{topics.RECORDS_RAW} has 1000000" in message
    assert "message.max.bytes is" not in message, "no other topic inherits the broker's"


async def test_a_replication_factor_the_cluster_cannot_meet_is_refused(real_kafka: str) -> None:
    try:
        with pytest.raises(Conflict) as refused:
            await ensure_topics(KafkaConnection(bootstrap=real_kafka, replication_factor=3))
        assert f"Kafka broker {real_kafka}" in str(refused.value)
        assert "refused to create topic driftloop." in str(refused.value)
    finally:
        kafka_broker.delete_topics(real_kafka)


def _set_broker_limit(admin: AdminClient, value: str | None) -> None:
    op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    entry = ConfigEntry("message.max.bytes", value or "", incremental_operation=op)
    resource = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result()


def _broker_limit(admin: AdminClient) -> int:
    resource = ConfigResource(ResourceType.BROKER, "1")
    configs = next(iter(admin.describe_configs([resource]).values())).result()
    return int(configs["message.max.bytes"].value)


def _set_topic_limits(admin: AdminClient, limits: dict[str, str]) -> None:
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry("max.message.bytes", value, incremental_operation=AlterConfigOpType.SET)
            ],
        )
        for name, value in limits.items()
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result()

    def applied() -> bool:
        described = admin.describe_configs(
            [ConfigResource(ResourceType.TOPIC, name) for name in limits]
        )
        found = {r.name: f.result()["max.message.bytes"].value for r, f in described.items()}
        return found == limits

    wait_until(applied, 30, "the topic-level limits to show")
