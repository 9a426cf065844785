"""The trace's chain assembly from registry, training and topic records: ordering, step
durations, the fall-back to what training recorded when the bus forgot the drift event."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.training.v1 import training_pb2
from driftloop.shared.bus import envelope
from driftloop.shared.cli.commands.trace import parse_version
from driftloop.shared.cli.commands.trace_chain import GONE, Sources, build_chain
from driftloop.shared.registry_types import AliasChange, AuditRecord, History, Lineage, ModelVersion

pytestmark = pytest.mark.unit
T0 = 1_800_000_000.0


def at(message: object, field: str, offset: float) -> None:
    getattr(message, field).FromNanoseconds(int((T0 + offset) * 1e9))


def sources(with_bus: bool) -> Sources:
    drift = events_pb2.DriftDetected(model="m", version="1", episode_id="ep", live_rows=500)
    drift.features.add(feature="x0", test="ks", p_value=1e-12, drifted=True)
    drift_event = envelope.new_event("monitoring", drift)
    at(drift_event, "occurred_at", 0)
    corr = drift_event.event_id
    run = training_pb2.Run(
        run_id="r1",
        model="m",
        state="succeeded",
        trigger="drift",
        episode_id="ep",
        correlation_id=corr,
        fit_seconds=0.4,
        training_rows=800,
        data_wait_seconds=3.0,
        cause_detail="x0 ks p=1.0e-12 drifted",
    )
    for field, offset in (
        ("caused_at", 0),
        ("created_at", 0.1),
        ("started_at", 0.2),
        ("finished_at", 4.0),
    ):
        at(run, field, offset)
    version = ModelVersion("m", "2", "production", lineage=Lineage(correlation_id=corr))
    register = AuditRecord(
        at=T0 + 4.1,
        action="register",
        reason="accuracy 0.900 >= champion ...",
        details_json=json.dumps(
            {
                "metrics": {"accuracy": 0.9},
                "champion_metrics": {"accuracy": 0.6},
                "champion_version": "1",
            }
        ),
    )
    promote = AuditRecord(
        at=T0 + 4.1,
        action="promote",
        reason="accuracy 0.900 >= ...",
        details_json=json.dumps({"actor": "policy"}),
    )
    later = AliasChange(
        version="1",
        previous_version="2",
        action="rollback",
        actor="bob",
        reason="slice b regressed",
        at=T0 + 50,
    )
    history = History(aliases=(later,), audit=(register, promote))
    deployed = envelope.new_event(
        "serving",
        events_pb2.ModelDeployed(model="m", version="2", load_seconds=0.2),
        correlation_id=corr,
    )
    at(deployed, "occurred_at", 5.0)
    events = [drift_event, deployed] if with_bus else []
    return Sources(corr, runs=[run], versions=[version], history={"2": history}, events=events)


def test_complete_chain_in_time_order_with_step_seconds() -> None:
    chain = build_chain(sources(with_bus=True))
    assert chain["complete"] and chain["model"] == "m" and chain["version"] == "2"
    steps = [s["step"] for s in chain["steps"]]
    assert steps == [
        "drift detected",
        "training run queued",
        "training started",
        "post-drift data ready",
        "training succeeded",
        "version 2 registered",
        "version 2 promoted",
        "version 2 deployed",
        "production moved to v1",
    ]
    by_step = {s["step"]: s for s in chain["steps"]}
    assert by_step["post-drift data ready"]["seconds"] == pytest.approx(3.0, abs=1e-3)
    assert by_step["version 2 deployed"]["since_start"] == pytest.approx(5.0, abs=1e-3)
    assert (
        "accuracy 0.900 vs champion v1 accuracy 0.600" in by_step["version 2 registered"]["detail"]
    )
    assert "x0 ks p=1.0e-12" in by_step["drift detected"]["detail"]


def test_without_the_bus_the_registry_and_training_still_tell_the_story() -> None:
    chain = build_chain(sources(with_bus=False))
    by_step = {s["step"]: s for s in chain["steps"]}
    assert GONE in by_step["drift detected"]["source"]
    assert by_step["deployment"]["detail"] == GONE and by_step["deployment"]["at"] is None
    assert chain["steps"][-1]["step"] == "deployment"
    assert not chain["complete"] and chain["missing"] == ["deployment"]


@pytest.mark.parametrize(
    "ident, version, expected",
    [("m:3", "", ("m", "3")), ("m", "3", ("m", "3")), ("abc-123", "", None), ("a:b", "", None)],
)
def test_version_ids(ident: str, version: str, expected: tuple[str, str] | None) -> None:
    assert parse_version(ident, version) == expected


def test_pending_approval_event_spec_version_search_and_slices_show_in_the_chain() -> None:
    src = sources(with_bus=True)
    run = src.runs[0]
    run.spec_version = 3
    run.best_params["C"] = "1.0"
    history = src.history["2"]
    register = history.audit[0]
    details = json.loads(register.details_json)
    details["slice_metrics"] = [
        {"column": "segment", "value": v, "rows": 50, "metrics": {}} for v in "ab"
    ]
    register = replace(register, details_json=json.dumps(details))
    src.history["2"] = replace(history, audit=(register, *history.audit[1:]))
    pending = envelope.new_event(
        "registry",
        events_pb2.ModelPendingApproval(model="m", version="2", reason="passes; waiting"),
        correlation_id=src.correlation_id,
    )
    at(pending, "occurred_at", 4.2)
    src.events.append(pending)
    by_step = {s["step"]: s for s in build_chain(src)["steps"]}
    assert "with spec v3; search chose C=1.0" in by_step["training succeeded"]["detail"]
    assert "2 slices of segment scored" in by_step["version 2 registered"]["detail"]
    requested = by_step["version 2 approval requested"]
    assert requested["source"] == "driftloop.models" and "passes; waiting" in requested["detail"]


def test_shadow_steps_show_the_live_evidence_and_the_shadow_alias_is_not_a_production_move() -> (
    None
):
    src = sources(with_bus=True)
    history = src.history["2"]
    register, promote = history.audit  # the promotion now comes after the live evidence
    shadowed = AuditRecord(
        at=T0 + 4.1,
        action="shadow",
        reason="accuracy 0.900 >= ...; runs as a shadow",
        details_json=json.dumps({"champion_version": "1", "shadow_min_labels": 200}),
    )
    evidence = AuditRecord(
        at=T0 + 4.6,
        action="shadow_evidence",
        reason="live accuracy 0.910 >= champion 0.700 + margin 0.010 on 250 labelled live "
        "predictions (the same requests)",
        details_json=json.dumps({"labelled": 250, "reported_by": "monitoring"}),
    )
    promote = replace(promote, reason=evidence.reason, at=T0 + 4.6)
    cleared = AliasChange(
        alias="shadow",
        version="",
        previous_version="2",
        action="clear",
        actor="policy",
        at=T0 + 4.6,
    )
    src.history["2"] = History(
        aliases=(*history.aliases, cleared), audit=(register, shadowed, evidence, promote)
    )
    chain = build_chain(src)
    steps = [s["step"] for s in chain["steps"]]
    assert "version 2 runs as a shadow" in steps and "version 2 live evidence" in steps
    assert steps.index("version 2 live evidence") < steps.index("version 2 promoted")
    by_step = {s["step"]: s for s in chain["steps"]}
    assert "250 labelled live predictions" in by_step["version 2 promoted"]["detail"]
    assert "production moved to v" not in " ".join(steps[:-1])  # the shadow clear is not one
    assert chain["complete"], chain["missing"]
