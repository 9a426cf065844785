"""What the scale-out kill tests (tests/e2e/test_scale_out*.py) check on real Kafka, for any
scaled service: which instance restarted, every row curated exactly once and in order, and the
consumer group's state (everything read, two members sharing the partitions)."""

from __future__ import annotations

import io
from typing import Any

import pyarrow.parquet as pq
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient

from driftloop.shared.cli.chaos.harness import Harness
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.manifest import latest_manifest
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.settings import CommonSettings


def instances(common: CommonSettings, service: str) -> list[dict[str, Any]]:
    found = stack.read_endpoints(common) or {}
    return list(found["services"][service]["instances"])


def restarted_pid(common: CommonSettings, service: str, old: int) -> int | None:
    """The second instance's pid once the supervisor restarted it (None meanwhile)."""
    pid = instances(common, service)[1]["pid"]
    return pid if pid and pid != old and stack.pid_alive(pid) else None


def curated_row_ids(store: ObjectStore, dataset: str) -> list[str]:
    """Row ids in curation order: the manifest's files in order, each file's rows in order."""
    manifest = latest_manifest(store, dataset)
    assert manifest is not None
    ids: list[str] = []
    for f in manifest.files:
        table = pq.read_table(io.BytesIO(store.get(f.key)), columns=["row_id"])
        ids += [str(v) for v in table.column("row_id").to_pylist()]
    return ids


def assert_each_row_curated_once(harnesses: list[Harness], store: ObjectStore) -> None:
    """Every good row sent is curated exactly once and in the order it was sent; every bad row
    is rejected; nothing is lost."""
    for h in harnesses:
        books = h.wait_accounted(240)
        assert books.duplicates == 0, f"{h.model}: rows curated twice"
        assert h.sent_good <= books.ids, f"{h.model}: {len(h.sent_good - books.ids)} lost"
        assert books.curated + books.rejected == h.sent, h.model
        assert books.curated == len(books.ids), h.model
        assert books.rejected > 0, "the bad rows were rejected, not lost"
        order = curated_row_ids(store, h.model)
        assert order == sorted(order), f"{h.model}: rows curated out of the order they were sent"


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    reply = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return {tp.partition: tp.offset for tp in reply.result().topic_partitions if tp.topic == topic}


def nothing_left(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    """Whether the group's committed offset is the (non-zero) end of every partition of
    `topic`."""
    committed = committed_offsets(bootstrap, group, topic)
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group}-scale-out-probe"})
    try:
        ends = {
            p: probe.get_watermark_offsets(KafkaPartition(topic, p), timeout=5)[1]
            for p in range(partitions)
        }
    finally:
        probe.close()
    return all(end > 0 and committed.get(p) == end for p, end in ends.items())


def two_members_share(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    """Whether the group is stable with two members, each owning partitions of `topic`,
    together all of them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_consumer_groups([group])[group].result()
    owned = [
        {tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic}
        for m in described.members
    ]
    return (
        str(described.state).endswith("STABLE")
        and len(owned) == 2
        and all(owned)
        and set().union(*owned) == set(range(partitions))
    )
