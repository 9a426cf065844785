"""Sample registry events, one of each type, for the tests of their storage and encoding."""

from __future__ import annotations

from driftloop.services.registry.core import events

SHA = "ab" * 32

PAYLOADS: list[events.ModelEvent] = [
    events.ModelRegistered(model="churn", version="3", run_id="run-3"),
    events.ModelPendingApproval(
        model="churn",
        version="3",
        run_id="run-3",
        reason="0.910 >= champion 0.880 + margin 0.010; waiting for approval",
        metrics={"accuracy": 0.91, "f1_macro": 0.875},
        champion_version="2",
        champion_metrics={"accuracy": 0.88},
    ),
    events.ModelShadowed(
        model="churn",
        version="3",
        previous_shadow_version="2",
        artifact_uri="artifacts/churn/run-3/model.skops",
        artifact_sha256=SHA,
        reason="passes offline",
        champion_version="1",
        run_id="run-3",
    ),
    events.ModelPromoted(
        model="churn",
        version="3",
        previous_version="1",
        artifact_uri="artifacts/churn/run-3/model.skops",
        artifact_sha256=SHA,
        reason="better",
        action="rollback",
    ),
    events.ModelRejected(model="churn", version="3", reason="worse"),
    events.ModelNeedsAttention(
        model="churn", version="3", reason="both fail the floor", decision="promoted"
    ),
]
