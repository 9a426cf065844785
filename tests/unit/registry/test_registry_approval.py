"""Approval mode, operator actors and the history (alias moves + audit) on a real SQLite file,
plus the schema migration from version 1 that added alias actions and audit correlation ids."""

from __future__ import annotations

import sqlite3
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
from driftloop.services.registry.core.migrations import MIGRATIONS
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.store import RegistryStore
from driftloop.shared.errors import Conflict, InvalidInput

pytestmark = pytest.mark.unit
SHA = "ab" * 32


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    s = RegistryStore(tmp_path / "registry.db")
    yield s
    s.close()


@pytest.fixture
def registry(store: RegistryStore) -> Registry:
    r = Registry(store)
    r.create_model(
        "churn", "customers", "churned", TrainingSpec(policy=PromotionPolicy(mode="approval"))
    )
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
        metrics={"accuracy": accuracy, "f1_macro": accuracy},
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


def events(store: RegistryStore) -> list[events_pb2.Envelope]:
    with store.transaction() as tx:
        return [pb.event_to_pb(row.payload) for row in tx.outbox.unsent()]


def test_unknown_mode_is_invalid_input(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="mode"):
        registry.create_model("x", "d", "y", TrainingSpec(policy=PromotionPolicy(mode="yolo")))
    assert registry.get_model("churn").spec.policy.mode == "approval"
    registry.create_model("auto", "d", "y", TrainingSpec())
    assert registry.get_model("auto").spec.policy.mode == "auto"


def test_passing_candidate_waits_and_approval_promotes_with_its_chain(
    registry: Registry, store: RegistryStore
) -> None:
    reg = registry.register(candidate("r1", 0.9))
    assert not reg.promoted and reg.version.status == "pending_approval"
    assert "waiting for approval" in reg.decision_reason and "0.900" in reg.decision_reason
    assert [e.type for e in events(store)] == ["ModelRegistered", "ModelPendingApproval"]
    pending = events(store)[-1]
    assert pending.model_pending_approval.version == "1"
    assert pending.model_pending_approval.metrics["accuracy"] == 0.9
    assert pending.model_pending_approval.run_id == "r1"
    assert (pending.correlation_id, pending.causation_id) == ("corr-r1", "drift-r1")
    with pytest.raises(InvalidInput, match="reason"):
        registry.approve("churn", "1", " ")

    done = registry.approve("churn", "1", "checked the slices", actor="alice")
    assert done.status == "production" and registry.production("churn").version == "1"
    promoted = events(store)[-1]
    assert promoted.model_promoted.action == "approve"
    assert (promoted.correlation_id, promoted.causation_id) == ("corr-r1", "drift-r1")
    with pytest.raises(Conflict, match="not pending_approval"):
        registry.approve("churn", "1", "again")

    history = registry.history("churn", "1")
    assert [(a.version, a.actor, a.action) for a in history.aliases] == [("1", "alice", "approve")]
    actions = [r.action for r in history.audit]
    assert actions == ["register", "await_approval", "approve"]
    register = history.audit[0]
    assert register.details["metrics"]["accuracy"] == 0.9
    assert register.details["policy"]["mode"] == "approval"
    assert {r.correlation_id for r in history.audit} == {"corr-r1"}


def test_rejected_candidate_never_waits(registry: Registry) -> None:
    registry.register(candidate("r1", 0.9))
    registry.approve("churn", "1", "ok")
    reg = registry.register(candidate("r2", 0.5, champion="1", champ_acc=0.9))
    assert reg.version.status == "rejected"
    with pytest.raises(Conflict, match="rejected"):
        registry.approve("churn", "2", "please")


def test_approval_refused_when_the_champion_moved(registry: Registry) -> None:
    registry.register(candidate("r1", 0.8))
    registry.approve("churn", "1", "ok")
    registry.register(candidate("r2", 0.9, champion="1", champ_acc=0.8))
    registry.register(candidate("r3", 0.95, champion="1", champ_acc=0.8))
    registry.approve("churn", "3", "better")
    with pytest.raises(Conflict, match="production is now 3"):
        registry.approve("churn", "2", "late")


def test_rollback_records_the_actor_and_its_own_chain(
    registry: Registry, store: RegistryStore
) -> None:
    registry.register(candidate("r1", 0.8))
    registry.approve("churn", "1", "ok")
    registry.register(candidate("r2", 0.9, champion="1", champ_acc=0.8))
    registry.approve("churn", "2", "ok")
    back = registry.rollback("churn", "", "v2 hurts segment b", actor="bob")
    assert back.version == "1"
    aliases = registry.history("churn").aliases
    assert [(a.version, a.previous_version, a.action, a.actor) for a in aliases] == [
        ("1", "", "approve", "operator"),
        ("2", "1", "approve", "operator"),
        ("1", "2", "rollback", "bob"),
    ]
    event = events(store)[-1]
    rollback_audit = registry.history("churn", "1").audit[-1]
    assert rollback_audit.action == "rollback"
    assert event.correlation_id == rollback_audit.correlation_id != ""


def test_schema_1_database_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in filter(str.strip, MIGRATIONS[0].split(";")):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO alias_history (model, alias, version, previous_version, reason, actor, at)"
        " VALUES ('m', 'production', 1, NULL, 'first', 'policy', 1.0)"
    )
    conn.commit()
    conn.close()
    store = RegistryStore(path)
    try:
        with store.transaction() as tx:
            history = tx.history("m")
        assert [(a.version, a.action, a.reason) for a in history.aliases] == [("1", "", "first")]
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        store.close()
