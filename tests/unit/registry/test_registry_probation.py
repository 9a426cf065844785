"""No regression after promotion: a policy promotion puts the previous version on live traffic as
a shadow ("probation"); monitoring's paired live evidence makes the registry roll back by itself
when the new version is worse, or drop the guard when it is not, with the reasons in the audit."""

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
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.shadow import ShadowEvidence
from driftloop.services.registry.core.store import RegistryStore

pytestmark = pytest.mark.unit
SHA = "cd" * 32
POLICY = PromotionPolicy(shadow_min_labels=100, shadow_max_labels=400)


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    s = RegistryStore(tmp_path / "registry.db")
    yield s
    s.close()


@pytest.fixture
def registry(store: RegistryStore) -> Registry:
    r = Registry(store)
    r.create_model("churn", "customers", "churned", TrainingSpec(policy=POLICY))
    r.register(candidate("run-1", 0.80))
    r.register(candidate("run-2", 0.90, champion="1", champ_acc=0.80))
    return r


def candidate(run_id: str, accuracy: float, champion: str = "", champ_acc: float = 0.0):
    return Candidate(
        model="churn",
        run_id=run_id,
        artifact_uri=f"artifacts/churn/{run_id}/model.skops",
        artifact_sha256=SHA,
        profile_uri="",
        metrics={"accuracy": accuracy},
        champion_metrics={"accuracy": champ_acc} if champion else {},
        champion_version=champion,
        lineage=Lineage(run_id=run_id, correlation_id=f"corr-{run_id}", trigger="drift"),
        correlation_id=f"corr-{run_id}",
        causation_id=f"drift-{run_id}",
    )


def events(store: RegistryStore) -> list[events_pb2.Envelope]:
    with store.transaction() as tx:
        return [pb.event_to_pb(row.payload) for row in tx.outbox.unsent()]


def live(labelled: int, previous_only: int, new_only: int, previous_acc: float) -> ShadowEvidence:
    """Evidence about the guard (version 1) against production (version 2)."""
    new_acc = previous_acc - (previous_only - new_only) / labelled
    return ShadowEvidence(
        model="churn",
        version="1",
        champion_version="2",
        labelled=labelled,
        shadow_metrics={"accuracy": previous_acc},
        champion_metrics={"accuracy": new_acc},
        shadow_only_right=previous_only,
        champion_only_right=new_only,
    )


def test_a_policy_promotion_opens_a_probation(registry: Registry, store: RegistryStore) -> None:
    assert registry.production("churn").version == "2"
    assert registry.get_version("churn", "1").status == "archived"
    shadowed = [e for e in events(store) if e.type == "ModelShadowed"]
    assert len(shadowed) == 1 and shadowed[0].model_shadowed.version == "1"
    assert shadowed[0].model_shadowed.champion_version == "2"
    assert "probation of version 2" in shadowed[0].model_shadowed.reason
    with store.transaction() as tx:
        assert tx.probation("churn") == "1"


def test_too_few_labels_wait(registry: Registry) -> None:
    found = registry.report_shadow_evidence(live(50, 10, 2, 0.85))
    assert found.outcome == "waiting" and "50 of 100" in found.reason


def test_a_worse_new_version_is_rolled_back_by_itself(
    registry: Registry, store: RegistryStore
) -> None:
    found = registry.report_shadow_evidence(
        live(300, previous_only=40, new_only=10, previous_acc=0.85)
    )
    assert found.outcome == "promoted" and found.decided
    assert "the new version is worse on live labels" in found.reason and "p=" in found.reason
    assert registry.production("churn").version == "1"
    rollback = [e for e in events(store) if e.type == "ModelPromoted"][-1].model_promoted
    assert (rollback.version, rollback.previous_version, rollback.action) == ("1", "2", "rollback")
    audit = registry.history("churn").audit
    assert any(a.action == "probation_evidence" for a in audit)
    with store.transaction() as tx:
        assert tx.probation("churn") == ""
    again = registry.report_shadow_evidence(live(350, 45, 10, 0.85))
    assert again.outcome != "waiting" and not again.decided  # decided already


def test_a_new_version_not_worse_keeps_production_and_drops_the_guard(
    registry: Registry, store: RegistryStore
) -> None:
    found = registry.report_shadow_evidence(
        live(400, previous_only=8, new_only=20, previous_acc=0.8)
    )
    assert found.outcome == "rejected" and "probation passed" in found.reason
    assert registry.production("churn").version == "2"
    assert registry.get_version("churn", "1").status == "archived"
    dropped = [e for e in events(store) if e.type == "ModelRejected"][-1].model_rejected
    assert dropped.version == "1"  # serving unloads the guard
    assert any(a.action == "probation_ended" for a in registry.history("churn").audit)


def test_evidence_against_another_production_is_stale(registry: Registry) -> None:
    stale = live(300, 40, 10, 0.85)
    found = registry.report_shadow_evidence(
        ShadowEvidence(**{**stale.__dict__, "champion_version": "7"})
    )
    assert found.outcome == "stale" and registry.production("churn").version == "2"
