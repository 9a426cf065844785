"""Shadow mode in the registry: a passing candidate becomes the shadow (alias, audit, event),
live evidence promotes or rejects it by the policy (idempotent), and the pure live verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.registry.adapters import pb
from driftloop.services.registry.core.domain import (
    Candidate,
    Lineage,
    PromotionPolicy,
    TrainingSpec,
)
from driftloop.services.registry.core.policy import decide_live
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.shadow import ShadowEvidence
from driftloop.services.registry.core.store import RegistryStore
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit
SHA = "ab" * 32
POLICY = PromotionPolicy(mode="shadow", margin=0.02, shadow_min_labels=100, shadow_max_labels=300)


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    s = RegistryStore(tmp_path / "registry.db")
    yield s
    s.close()


@pytest.fixture
def registry(store: RegistryStore) -> Registry:
    r = Registry(store)
    r.create_model("churn", "customers", "churned", TrainingSpec(policy=POLICY))
    return r


def candidate(
    run_id: str, accuracy: float, champion: str = "", champ_acc: float = 0.0
) -> Candidate:
    return Candidate(
        model="churn",
        run_id=run_id,
        artifact_uri=f"artifacts/churn/{run_id}/model.skops",
        artifact_sha256=SHA,
        profile_uri="",
        metrics={"accuracy": accuracy},
        champion_metrics={"accuracy": champ_acc} if champion else {},
        champion_version=champion,
        lineage=Lineage(
            run_id=run_id,
            correlation_id=f"corr-{run_id}",
            causing_event_id=f"drift-{run_id}",
            parent_version=champion,
            trigger="drift",
        ),
        correlation_id=f"corr-{run_id}",
        causation_id=f"drift-{run_id}",
    )


def drain(store: RegistryStore) -> list[events_pb2.Envelope]:
    with store.transaction() as tx:
        rows = tx.outbox.unsent()
        for row in rows:
            tx.outbox.mark_sent(row.id)
    return [pb.event_to_pb(row.payload) for row in rows]


def evidence(version: str, labelled: int, shadow: float, champ: float, champion: str = "1"):
    return ShadowEvidence(
        model="churn",
        version=version,
        champion_version=champion,
        labelled=labelled,
        shadow_metrics={"accuracy": shadow},
        champion_metrics={"accuracy": champ},
    )


def test_first_version_is_promoted_at_once_then_a_passing_candidate_is_shadowed(
    registry: Registry, store: RegistryStore
) -> None:
    first = registry.register(candidate("r1", 0.8))
    assert first.promoted and first.version.status == "production"
    drain(store)

    reg = registry.register(candidate("r2", 0.9, "1", 0.8))
    assert not reg.promoted and reg.version.status == "shadow"
    assert "shadow beside version 1" in reg.decision_reason
    assert registry.get_model("churn").shadow_version == "2"
    assert registry.get_model("churn").production_version == "1"
    sent = drain(store)
    assert [e.type for e in sent] == ["ModelRegistered", "ModelShadowed"]
    shadowed = sent[1].model_shadowed
    assert (shadowed.version, shadowed.champion_version) == ("2", "1")
    assert shadowed.artifact_sha256 == SHA and sent[1].correlation_id == "corr-r2"
    history = registry.history("churn")
    assert [(a.alias, a.version, a.action) for a in history.aliases] == [
        ("production", "1", "promote"),
        ("shadow", "2", "shadow"),
    ]
    assert "shadow" in [r.action for r in history.audit]


def test_a_failing_candidate_is_rejected_offline_not_shadowed(registry: Registry) -> None:
    registry.register(candidate("r1", 0.8))
    reg = registry.register(candidate("r2", 0.81, "1", 0.8))  # below margin 0.02
    assert reg.version.status == "rejected" and registry.get_model("churn").shadow_version == ""


def test_live_evidence_waits_then_promotes_with_the_chain(
    registry: Registry, store: RegistryStore
) -> None:
    registry.register(candidate("r1", 0.8))
    registry.register(candidate("r2", 0.9, "1", 0.8))
    drain(store)

    waiting = registry.report_shadow_evidence(evidence("2", 50, 0.95, 0.7))
    assert waiting.outcome == "waiting" and waiting.min_labels == 100
    assert "50 of 100" in waiting.reason and not drain(store)

    done = registry.report_shadow_evidence(evidence("2", 120, 0.91, 0.75))
    assert done.outcome == "promoted" and done.decided
    assert registry.production("churn").version == "2"
    assert registry.get_model("churn").shadow_version == ""
    sent = drain(store)
    assert [e.type for e in sent] == ["ModelPromoted"]
    promoted = sent[0]
    assert promoted.model_promoted.action == "promote"
    assert "120 labelled live predictions" in promoted.model_promoted.reason
    assert promoted.correlation_id == "corr-r2"  # trace follows drift -> shadow -> promotion
    audit = [r.action for r in registry.history("churn", "2").audit]
    assert audit[-2:] == ["shadow_evidence", "promote"]
    aliases = [(a.alias, a.version, a.action) for a in registry.history("churn").aliases]
    assert aliases[-2:] == [("shadow", "", "clear"), ("production", "2", "promote")]

    again = registry.report_shadow_evidence(evidence("2", 130, 0.91, 0.75))
    assert again.outcome == "promoted" and not again.decided and not drain(store)


def test_live_evidence_rejects_a_worse_shadow(registry: Registry, store: RegistryStore) -> None:
    registry.register(candidate("r1", 0.8))
    registry.register(candidate("r2", 0.9, "1", 0.8))
    drain(store)
    done = registry.report_shadow_evidence(evidence("2", 100, 0.70, 0.80))
    assert done.outcome == "rejected" and done.version.status == "rejected"
    assert registry.production("churn").version == "1"
    sent = drain(store)
    assert [e.type for e in sent] == ["ModelRejected"]
    assert "0.700 <= champion 0.800" in sent[0].model_rejected.reason


def test_stale_evidence_and_replaced_shadows(registry: Registry, store: RegistryStore) -> None:
    registry.register(candidate("r1", 0.8))
    registry.register(candidate("r2", 0.9, "1", 0.8))
    stale = registry.report_shadow_evidence(evidence("2", 150, 0.95, 0.7, champion="7"))
    assert stale.outcome == "stale" and stale.version.status == "shadow"

    registry.register(candidate("r3", 0.92, "1", 0.8))  # a newer shadow replaces v2
    assert registry.get_version("churn", "2").status == "archived"
    assert registry.get_model("churn").shadow_version == "3"
    old = registry.report_shadow_evidence(evidence("2", 150, 0.95, 0.7))
    assert old.outcome == "stale" and old.version.status == "archived"
    shadowed = [e for e in drain(store) if e.type == "ModelShadowed"]
    assert shadowed[-1].model_shadowed.previous_shadow_version == "2"


def test_rollback_and_operator_promote_still_work_beside_a_shadow(registry: Registry) -> None:
    registry.register(candidate("r1", 0.8))
    registry.register(candidate("r2", 0.9, "1", 0.8))
    registry.promote("churn", "2", "looks good", "operator:alice")
    assert registry.get_model("churn").shadow_version == ""
    registry.rollback("churn", "", "segment b complaints")
    assert registry.production("churn").version == "1"


def test_decide_live_verdicts() -> None:
    p = POLICY
    assert decide_live(p, 99, {"accuracy": 1.0}, {"accuracy": 0.0}).outcome == "waiting"
    assert decide_live(p, 100, {"accuracy": 0.82}, {"accuracy": 0.80}).outcome == "promoted"
    assert decide_live(p, 100, {"accuracy": 0.78}, {"accuracy": 0.80}).outcome == "rejected"
    inconclusive = decide_live(p, 100, {"accuracy": 0.81}, {"accuracy": 0.80})
    assert inconclusive.outcome == "waiting" and "up to 300" in inconclusive.reason
    assert decide_live(p, 300, {"accuracy": 0.81}, {"accuracy": 0.80}).outcome == "rejected"
    with pytest.raises(InvalidInput, match="accuracy"):
        decide_live(p, 300, {"f1_macro": 0.81}, {"accuracy": 0.80})


def test_shadow_policy_fields_default_and_validate(registry: Registry) -> None:
    registry.create_model("d", "x", "y", TrainingSpec(policy=PromotionPolicy(mode="shadow")))
    policy = registry.get_model("d").spec.policy
    assert (policy.shadow_min_labels, policy.shadow_max_labels) == (200, 1000)
    with pytest.raises(InvalidInput, match="shadow_max_labels"):
        registry.create_model(
            "e",
            "x",
            "y",
            TrainingSpec(policy=PromotionPolicy(shadow_min_labels=50, shadow_max_labels=10)),
        )
    yaml_spec = "policy: {mode: shadow, shadow_min_labels: 40, margin: 0.05}\n"
    registry.create_model("f", "x", "y", TrainingSpec(), spec_yaml=yaml_spec)
    assert registry.get_model("f").spec.policy.shadow_max_labels == 200
