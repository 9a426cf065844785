"""Conversions between training's domain types and protobuf: runs and reproduction reports of
the API, and the DriftDetected events it reads."""

from __future__ import annotations

from driftloop.protos.training.v1 import training_pb2 as pb
from driftloop.services.training.core.domain import Run
from driftloop.services.training.core.drift import DriftTrigger, FeatureDrift
from driftloop.services.training.core.reproduce import Reproduction
from driftloop.shared.bus.envelope import Envelope
from driftloop.shared.timestamps import optional_timestamp, seconds


def run_to_pb(run: Run) -> pb.Run:
    return pb.Run(
        run_id=run.run_id,
        model=run.model,
        state=run.state,
        trigger=run.trigger,
        episode_id=run.episode_id or "",
        correlation_id=run.correlation_id,
        error=run.error,
        created_at=optional_timestamp(run.created_at),
        started_at=optional_timestamp(run.started_at),
        finished_at=optional_timestamp(run.finished_at),
        registered_version=run.registered_version,
        metrics=run.metrics,
        manifest_version=run.manifest_version,
        training_rows=run.training_rows,
        fit_seconds=run.fit_seconds,
        promoted=run.promoted,
        decision_reason=run.decision_reason,
        data_wait_seconds=run.data_wait_seconds,
        caused_at=optional_timestamp(run.caused_at),
        cause_detail=run.cause_detail,
        reason=run.reason,
        progress=run.progress,
        spec_version=run.spec_version,
        best_params=run.best_params,
        schedule_slot=run.schedule_slot or "",
        attempt=run.attempt,
        wait_rows=run.wait_rows,
        wait_reason=run.wait_reason,
        outcome=run.outcome,
    )


def reproduction_to_pb(model: str, version: str, found: Reproduction) -> pb.ReproduceReport:
    return pb.ReproduceReport(
        model=model,
        version=version,
        matched=found.matched,
        recorded_metrics=found.recorded_metrics,
        reproduced_metrics=found.reproduced_metrics,
        holdout_rows=found.holdout_rows,
        prediction_mismatches=found.prediction_mismatches,
        differences=found.differences,
        manifest_version=found.manifest_version,
        library_versions=found.library_versions,
        spec_version=found.spec_version,
    )


def drift_trigger_from_event(event: Envelope) -> DriftTrigger:
    """The DriftDetected event an envelope of driftloop.drift carries."""
    drift = event.drift_detected
    return DriftTrigger(
        model=drift.model,
        version=drift.version,
        episode_id=drift.episode_id,
        correlation_id=event.correlation_id,
        causation_id=event.event_id,
        occurred_at=seconds(event.occurred_at),
        window_end=seconds(drift.window_end) if drift.HasField("window_end") else None,
        features=tuple(
            FeatureDrift(f.feature, f.test, f.p_value, f.drifted) for f in drift.features
        ),
        drift_share=drift.drift_share,
        live_rows=drift.live_rows,
        reference_rows=drift.reference_rows,
        partitions=tuple(drift.partitions),
    )
