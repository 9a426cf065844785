"""Monitoring state that moves with its partitions: with several instances in one consumer
group, each monitors the models whose predictions partition the group assigned it.

A model's predictions, its labels and its changelog records (adapters/changelog.py) are keyed
by the model's name, so with the same partition count (topics.planned gives every keyed topic
DRIFTLOOP_KAFKA__PARTITIONS) they share a partition number; a range assignment (main.py) gives
one member the same numbers of every topic. On an assignment the instance forgets the models of
the partitions it lost (their next owner restores them) and reads the changelog partitions of
the ones it gained, up to their end, before handling any of their records: the previous owner
flushed its changes there when the partitions were revoked, or, killed, acknowledged every
change before committing what caused it, so the uncommitted rest is replayed to the new owner.
"""

from __future__ import annotations

import structlog
from aiokafka.structs import TopicPartition

from driftloop.services.monitoring.adapters.changelog import PendingChangelog, partition_of
from driftloop.services.monitoring.core.fleet_dispatch import FleetDispatch
from driftloop.services.monitoring.core.monitors import ModelMonitors
from driftloop.services.monitoring.core.performance import PendingState
from driftloop.shared.bus import topics
from driftloop.shared.errors import Unavailable

log = structlog.get_logger(__name__)

CO_PARTITIONED = (topics.PREDICTIONS, topics.LABELS, topics.MONITORING_PENDING)
"""Topics keyed by model whose partition numbers must match for a model's state to move."""


class PartitionMoves:
    """Which predictions partitions this instance owns, and the restores it still owes."""

    def __init__(
        self, changelog: PendingChangelog, monitors: ModelMonitors, fleets: FleetDispatch
    ) -> None:
        self._changelog = changelog
        self._monitors = monitors
        self._fleets = fleets
        self._partitions = 0
        """The predictions topic's partition count (a model's partition: partition_of)."""
        self._owned: set[int] = set()
        self._owed: set[int] = set()
        """Assigned partitions whose changelog is not restored yet."""

    async def start(self) -> None:
        """Start the changelog and check that the model-keyed topics are co-partitioned."""
        await self._changelog.start()
        counts = {t: await self._changelog.partitions_of(t) for t in CO_PARTITIONED}
        self._partitions = counts[topics.PREDICTIONS]
        if len(set(counts.values())) > 1:
            # why not refuse to start: one instance of the group still monitors correctly
            # what it is given; the fix is the topics' layout, not a crash loop
            log.error(
                "monitoring_topics_not_co_partitioned",
                partitions=counts,
                fix="give these topics the same partition count: a model's labels and "
                "changelog must share its predictions' partition for its state to move",
            )

    def owns(self, model: str) -> bool:
        return partition_of(model, self._partitions) in self._owned

    def assigned(self, assigned: list[TopicPartition]) -> list[str]:
        """The group's new assignment: forget the models of partitions no longer owned (also
        those every instance loads at start), owe a restore for the gained ones. Returns the
        models forgotten."""
        owned = {tp.partition for tp in assigned if tp.topic == topics.PREDICTIONS}
        gained = owned - self._owned
        self._owned = owned
        self._owed = (self._owed | gained) & owned
        held = self._monitors.models() + self._monitors.restored_models()
        dropped = self._fleets.drop([m for m in held if not self.owns(m)])
        log.info(
            "partitions_assigned",
            partitions=sorted(owned),
            gained=sorted(gained),
            models_dropped=len(dropped),
        )
        return dropped

    async def restore_owed(self) -> list[str]:
        """Restore the pending predictions and fleet request ids of the gained partitions'
        models from the changelog; the models restored. Raises Unavailable (nothing restored)
        when it cannot."""
        if not self._owed:
            return []
        owed = set(self._owed)
        same = self._changelog.partitions == self._partitions
        try:
            # a changelog laid out differently: read it all and keep the models owned
            restored = await self._changelog.read(owed if same else None)
        except Unavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a broker error: retried, never dead-lettered
            raise Unavailable(f"cannot read the monitoring changelog: {exc!r}") from exc
        mine: dict[str, list[tuple[str, PendingState]]] = {
            model: states
            for model, states in restored.items()
            if partition_of(model, self._partitions) in owed
        }
        for model, states in mine.items():
            self._monitors.restore_pending(model, states)
        indexed = self._fleets.restore(mine)
        self._owed -= owed
        log.info(
            "pending_predictions_restored",
            partitions=sorted(owed),
            models=len(mine),
            states=sum(len(s) for s in mine.values()),
            fleet_request_ids=indexed,
        )
        return list(mine)
