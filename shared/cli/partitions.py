"""Which partitions the CLI's read-only readers (status, trace, deadletter, the demo's and the
benches' event tails, chaos) read: every partition the broker has of each topic.

why: `topics.partitions` waits for the count this process's settings would create (the default
layout's 3 for a keyed topic), but a reader runs beside a stack it did not start: one started
with DRIFTLOOP_KAFKA__PARTITIONS=6, or an ops team's cluster whose topics were made by hand,
is read from a shell without that setting. Here the broker states the counts (DescribeTopics),
so a reader neither waits out its timeout for partitions a topic does not have nor depends on
metadata it expected.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import TopicPartition

from driftloop.shared.bus import topics
from driftloop.shared.bus.connection import KafkaTarget


async def every_partition(target: KafkaTarget, names: Iterable[str]) -> list[TopicPartition]:
    """Every partition of the topics `names` on the broker, in topic then partition order; a
    topic the broker does not have contributes none. Raises Unavailable / Unauthenticated as
    `topics.partition_counts` does."""
    counts = await topics.partition_counts(target, list(dict.fromkeys(names)))
    return [TopicPartition(name, p) for name, count in counts.items() for p in range(count)]
