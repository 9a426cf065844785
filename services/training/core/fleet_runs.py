"""Training a fleet: which partitions a fleet run trains, the rows of one partition, and the runs
that carry a fleet's partitions through the same queue and worker (one process, no start-up per
partition).

A fleet run (the fleet's own model name) fits the global model on every partition's rows, then
queues one run per partition with the spec's min_rows, each registered under its partition model
name. The data is read and grouped once per dataset, and only new files after that
(fleet_snapshot.py). A fleet episode (DriftDetected naming partitions) queues the fleet's run
and one run per named partition at once, each with its own episode id derived from the
fleet's, so the per-episode idempotence holds per partition.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd

from driftloop.shared import fleet

PARTITION_KEY = "__partition__"


def child_episode(episode_id: str, partition: str) -> str:
    """The episode id of `partition`'s run within a fleet episode: unique per partition (the run
    table keeps one run per episode and attempt) and stable across a redelivered event."""
    digest = hashlib.sha256(partition.encode()).hexdigest()[:16]
    return f"{episode_id}.{digest}"


def child_slot(parent_run_id: str, partition: str) -> str:
    """The key that makes a fleet run queue each partition's run once, even when the fleet run
    is redone after a crash."""
    digest = hashlib.sha256(partition.encode()).hexdigest()[:16]
    return f"fleet:{parent_run_id}:{digest}"


def grown_slot(run_id: str) -> str:
    """The key that queues a partition's next run once after an inconclusive one (waiting for
    the partition to grow), even when that run is redone."""
    return f"grown:{run_id}"


@dataclass(frozen=True)
class GroupedFrame:
    frame: pd.DataFrame
    groups: dict[str, pd.Index]
    """Partition suffix (COLUMN=VALUE/...) -> row labels; rows without a value are in none."""

    def rows(self, suffix: str) -> pd.DataFrame:
        index = self.groups.get(suffix)
        if index is None:
            return self.frame.iloc[0:0]
        return self.frame.loc[index]

    def eligible(self, min_rows: int) -> list[str]:
        """Partitions with at least `min_rows` rows, largest first (then by name)."""
        sizes = [(len(index), suffix) for suffix, index in self.groups.items()]
        return [s for n, s in sorted(sizes, key=lambda p: (-p[0], p[1])) if n >= min_rows]


def group(frame: pd.DataFrame, columns: tuple[str, ...], max_partitions: int) -> GroupedFrame:
    """`frame` grouped by its partition; TooLarge when the columns have more distinct values than
    `max_partitions` (before any model is trained or created). A frame with no rows groups into
    no partitions, whatever its columns (a snapshot with nothing since the drift reads as a frame
    without columns)."""
    if frame.empty:
        return GroupedFrame(frame, {})
    keys = fleet.partition_keys(frame, columns)
    fleet.count_partitions(keys.unique(), columns, max_partitions)
    present = keys[keys != ""]
    groups = {str(k): idx for k, idx in present.groupby(present, sort=False).groups.items()}
    return GroupedFrame(frame, groups)
