"""Kafka handlers of training: a DriftDetected event queues one run per drift episode; a
DatasetVersioned event queues the first run of models waiting for enough data."""

from __future__ import annotations

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.training.core.training import Training
from driftloop.shared.bus.envelope import Envelope


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
            caused_at=event.occurred_at.ToNanoseconds() / 1e9,
            cause_detail=drift_summary(drift),
        )

    async def on_validated(self, event: Envelope) -> None:
        if event.WhichOneof("payload") != "dataset_versioned":
            return  # RecordBatch events share the topic; training reads data from the store
        versioned = event.dataset_versioned
        await self._training.queue_auto(
            versioned.dataset, versioned.total_rows, causation_id=event.event_id
        )


def drift_summary(drift: events_pb2.DriftDetected) -> str:
    """One line of evidence kept on the run, so a trace can show it after the bus forgot it."""
    hits = [f"{f.feature} {f.test} p={f.p_value:.1e}" for f in drift.features if f.drifted]
    return (
        f"{', '.join(hits) or 'no single feature'} drifted; share {drift.drift_share:.2f}; "
        f"window of {drift.live_rows} live rows vs {drift.reference_rows} reference rows "
        f"(version {drift.version})"
    )
