"""Training's protobuf conversions and drift triggers: runs and reproduction reports keep every
field across the wire (unset times stay unset); a DriftDetected envelope becomes the trigger its
handler queues a run from (ids, rows to train on, one line of evidence)."""

from __future__ import annotations

import pytest

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.training.adapters import pb
from driftloop.services.training.adapters.kafka import TrainingEvents
from driftloop.services.training.core.domain import Run
from driftloop.services.training.core.drift import DriftTrigger, FeatureDrift
from driftloop.services.training.core.reproduce import Reproduction
from driftloop.shared.bus import envelope

pytestmark = pytest.mark.unit


def over_the_wire(message):  # type: ignore[no-untyped-def]
    return type(message).FromString(message.SerializeToString())


def time_of(message, name: str) -> float | None:  # type: ignore[no-untyped-def]
    return pb.seconds(getattr(message, name)) if message.HasField(name) else None


def run_from(message) -> Run:  # type: ignore[no-untyped-def]
    """The inverse of run_to_pb, for this test only (no caller needs it)."""
    return Run(
        run_id=message.run_id,
        model=message.model,
        state=message.state,
        trigger=message.trigger,
        episode_id=message.episode_id or None,
        correlation_id=message.correlation_id,
        causation_id="",
        data_since=None,
        created_at=pb.seconds(message.created_at),
        reason=message.reason,
        error=message.error,
        started_at=time_of(message, "started_at"),
        finished_at=time_of(message, "finished_at"),
        registered_version=message.registered_version,
        promoted=message.promoted,
        decision_reason=message.decision_reason,
        metrics=dict(message.metrics),
        manifest_version=message.manifest_version,
        training_rows=message.training_rows,
        fit_seconds=message.fit_seconds,
        data_wait_seconds=message.data_wait_seconds,
        caused_at=time_of(message, "caused_at"),
        cause_detail=message.cause_detail,
        progress=message.progress,
        spec_version=message.spec_version,
        best_params=dict(message.best_params),
        schedule_slot=message.schedule_slot or None,
    )


def test_a_finished_drift_run_survives_the_wire() -> None:
    # times in whole half seconds: Timestamp nanoseconds hold them exactly
    run = Run(
        run_id="r1",
        model="churn",
        state="succeeded",
        trigger="drift",
        episode_id="ep-1",
        correlation_id="c-1",
        causation_id="",
        data_since=None,
        created_at=1_700_000_000.0,
        started_at=1_700_000_001.5,
        finished_at=1_700_000_009.5,
        registered_version="3",
        promoted=True,
        decision_reason="beats the champion",
        metrics={"accuracy": 0.91},
        manifest_version=7,
        training_rows=1200,
        fit_seconds=2.5,
        data_wait_seconds=30.0,
        caused_at=1_699_999_999.0,
        cause_detail="x ks p=1.0e-05 drifted",
        spec_version=2,
        best_params={"C": "0.5"},
    )
    assert run_from(over_the_wire(pb.run_to_pb(run))) == run


def test_a_queued_manual_run_leaves_its_times_and_episode_unset() -> None:
    run = Run("r2", "churn", "queued", "manual", None, "c-2", "", None, 5.0, reason="by hand")
    message = over_the_wire(pb.run_to_pb(run))
    assert not message.HasField("started_at") and not message.HasField("caused_at")
    assert message.episode_id == "" and message.schedule_slot == ""
    assert run_from(message) == run
    scheduled = Run("r3", "churn", "queued", "schedule", None, "", "", None, 5.0, schedule_slot="s")
    assert run_from(over_the_wire(pb.run_to_pb(scheduled))) == scheduled


def test_a_reproduction_report_keeps_every_field() -> None:
    found = Reproduction(
        matched=False,
        recorded_metrics={"accuracy": 0.9},
        reproduced_metrics={"accuracy": 0.8},
        holdout_rows=200,
        prediction_mismatches=4,
        differences=["accuracy 0.9 -> 0.8"],
        manifest_version=5,
        library_versions={"sklearn": "1.4 -> 1.5"},
        spec_version=3,
    )
    message = over_the_wire(pb.reproduction_to_pb("churn", "2", found))
    assert (message.model, message.version) == ("churn", "2")
    assert (
        Reproduction(
            matched=message.matched,
            recorded_metrics=dict(message.recorded_metrics),
            reproduced_metrics=dict(message.reproduced_metrics),
            holdout_rows=message.holdout_rows,
            prediction_mismatches=message.prediction_mismatches,
            differences=list(message.differences),
            manifest_version=message.manifest_version,
            library_versions=dict(message.library_versions),
            spec_version=message.spec_version,
        )
        == found
    )


def drift_event(**fields: object) -> envelope.Envelope:
    drift = events_pb2.DriftDetected(
        model="churn",
        version="4",
        episode_id="ep-9",
        features=[
            events_pb2.FeatureDrift(feature="x", test="ks", p_value=1e-5, drifted=True),
            events_pb2.FeatureDrift(feature="y", test="chi2", p_value=0.4, drifted=False),
        ],
        drift_share=0.5,
        live_rows=500,
        reference_rows=2000,
        **fields,  # type: ignore[arg-type]
    )
    return over_the_wire(envelope.new_event("monitoring", drift, correlation_id="c-9"))


def test_a_drift_event_becomes_the_trigger_of_its_run() -> None:
    event = drift_event()
    event.drift_detected.window_end.FromNanoseconds(1_700_000_100_500_000_000)
    trigger = pb.drift_trigger_from_event(event)
    assert trigger == DriftTrigger(
        model="churn",
        version="4",
        episode_id="ep-9",
        correlation_id="c-9",
        causation_id=event.event_id,
        occurred_at=pb.seconds(event.occurred_at),
        window_end=1_700_000_100.5,
        features=(FeatureDrift("x", "ks", 1e-5, True), FeatureDrift("y", "chi2", 0.4, False)),
        drift_share=0.5,
        live_rows=500,
        reference_rows=2000,
    )
    assert trigger.data_since == 1_700_000_100.5, "rows after the monitor's window"
    assert trigger.summary() == (
        "x ks p=1.0e-05 drifted; share 0.50; window of 500 live rows vs 2000 reference rows "
        "(version 4)"
    )


def test_a_drift_event_without_a_window_end_bounds_no_rows() -> None:
    trigger = pb.drift_trigger_from_event(drift_event())
    assert trigger.window_end is None and trigger.data_since is None
    quiet = DriftTrigger("m", "1", "e", "", "", 0.0, None, drift_share=0.25)
    assert quiet.summary().startswith("no single feature drifted; share 0.25;")


class RecordingTraining:
    """Stands in for the training core: records what the handlers queue."""

    def __init__(self) -> None:
        self.drifts: list[tuple[tuple[object, ...], dict[str, object]]] = []
        self.autos: list[tuple[tuple[object, ...], dict[str, object]]] = []

    async def queue_drift(self, *args: object, **kwargs: object) -> None:
        self.drifts.append((args, kwargs))

    async def queue_auto(self, *args: object, **kwargs: object) -> None:
        self.autos.append((args, kwargs))


async def test_the_drift_handler_queues_one_run_with_the_evidence() -> None:
    training = RecordingTraining()
    handlers = TrainingEvents(training)  # type: ignore[arg-type]
    event = drift_event()
    event.drift_detected.window_end.FromNanoseconds(1_700_000_100_500_000_000)
    await handlers.on_drift(event)
    await handlers.on_drift(envelope.new_event("x", events_pb2.LabelBatch(model="m")))
    trigger = pb.drift_trigger_from_event(event)
    assert training.drifts == [
        (
            ("churn", "ep-9"),
            {
                "correlation_id": "c-9",
                "causation_id": event.event_id,
                "data_since": 1_700_000_100.5,
                "caused_at": trigger.occurred_at,
                "cause_detail": trigger.summary(),
                "partitions": (),
            },
        )
    ], "other payloads on the topic are ignored"
    versioned = events_pb2.DatasetVersioned(dataset="d", total_rows=1500)
    auto = envelope.new_event("validation", versioned)
    await handlers.on_validated(auto)
    await handlers.on_validated(event)
    assert training.autos == [(("d", 1500), {"causation_id": auto.event_id})]
