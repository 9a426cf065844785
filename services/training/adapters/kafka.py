"""Kafka handlers of training: a DriftDetected event queues one run per drift episode; a
DatasetVersioned event queues the first run of models waiting for enough data."""

from __future__ import annotations

from driftloop.services.training.adapters.pb import drift_trigger_from_event
from driftloop.services.training.core.training import Training
from driftloop.shared.bus.envelope import Envelope


class TrainingEvents:
    def __init__(self, training: Training) -> None:
        self._training = training

    async def on_drift(self, event: Envelope) -> None:
        if event.WhichOneof("payload") != "drift_detected":
            return
        drift = drift_trigger_from_event(event)
        await self._training.queue_drift(
            drift.model,
            drift.episode_id,
            correlation_id=drift.correlation_id,
            causation_id=drift.causation_id,
            data_since=drift.data_since,
            caused_at=drift.occurred_at,
            cause_detail=drift.summary(),
            partitions=drift.partitions,
        )

    async def on_validated(self, event: Envelope) -> None:
        if event.WhichOneof("payload") != "dataset_versioned":
            # CuratedRows share the topic: claim checks, a few hundred bytes each unless
            # validation is told to inline files; training reads the data from the store
            return
        versioned = event.dataset_versioned
        await self._training.queue_auto(
            versioned.dataset, versioned.total_rows, causation_id=event.event_id
        )
