"""Kafka handlers of training: a DriftDetected event queues one run per drift episode; a
DatasetVersioned event queues the first run of models waiting for enough data."""

from __future__ import annotations

from driftloop.services.training.core import Training
from driftloop.shared.envelope import Envelope


class TrainingEvents:
    def __init__(self, training: Training) -> None:
        self._training = training

    async def on_drift(self, event: Envelope) -> None:
        if event.WhichOneof("payload") != "drift_detected":
            return
        drift = event.drift_detected
        # why: train on rows that arrived after the monitor's window ended (the detection). The
        # window itself still holds rows from before the change; mixing them in gives a model
        # of neither regime, which the monitor then flags as drifted again.
        data_since = None
        if drift.HasField("window_end"):
            data_since = drift.window_end.ToNanoseconds() / 1e9
        await self._training.queue_drift(
            drift.model,
            drift.episode_id,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
            data_since=data_since,
        )

    async def on_validated(self, event: Envelope) -> None:
        if event.WhichOneof("payload") != "dataset_versioned":
            return  # RecordBatch events share the topic; training reads data from the store
        versioned = event.dataset_versioned
        await self._training.queue_auto(
            versioned.dataset, versioned.total_rows, causation_id=event.event_id
        )
