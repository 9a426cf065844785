"""The registry core on a real SQLite file: idempotent registration, rollback, alias history,
outbox rows committed with their decision, and spec defaults/validation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
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
from driftloop.services.registry.core.store import RegistryStore
from driftloop.shared.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from driftloop.shared.paired import compare

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
    r.create_model("churn", "customers", "churned", TrainingSpec())
    return r


def candidate(
    run_id: str,
    accuracy: float,
    champion: str = "",
    champ_acc: float | None = None,
    correlation_id: str = "corr",
) -> Candidate:
    return Candidate(
        model="churn",
        run_id=run_id,
        artifact_uri=f"artifacts/churn/{run_id}/model.skops",
        artifact_sha256=SHA,
        profile_uri=f"artifacts/churn/{run_id}/profile.json",
        metrics={"accuracy": accuracy, "f1_macro": accuracy},
        champion_metrics={} if champ_acc is None else {"accuracy": champ_acc},
        champion_version=champion,
        lineage=Lineage(run_id=run_id, correlation_id=correlation_id, trigger="manual"),
        correlation_id=correlation_id,
        causation_id="cause-1",
    )


def outbox_events(store: RegistryStore) -> list[events_pb2.Envelope]:
    with store.transaction() as tx:
        return [pb.event_to_pb(row.payload) for row in tx.outbox.unsent()]


def test_defaults_fill_an_empty_spec(registry: Registry) -> None:
    spec = registry.get_model("churn").spec
    assert spec.estimator == "logistic_regression"
    assert (spec.window_rows, spec.holdout_fraction, spec.min_rows) == (2000, 0.2, 200)
    assert spec.policy == PromotionPolicy("accuracy", 0.0, 0.6)


@pytest.mark.parametrize(
    "spec, message",
    [
        (TrainingSpec(estimator="svm"), "unknown estimator"),
        (TrainingSpec(holdout_fraction=0.95), "holdout_fraction"),
        (TrainingSpec(policy=PromotionPolicy(margin=-0.6)), "margin"),
        (TrainingSpec(policy=PromotionPolicy(floor=1.5)), "floor"),
        (TrainingSpec(params={"C": "not json"}), "JSON"),
    ],
)
def test_bad_specs_are_invalid_input(registry: Registry, spec: TrainingSpec, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        registry.create_model("other", "customers", "churned", spec)


def test_create_twice_and_bad_names(registry: Registry) -> None:
    with pytest.raises(AlreadyExists):
        registry.create_model("churn", "customers", "churned", TrainingSpec())
    with pytest.raises(InvalidInput, match="model name"):
        registry.create_model("../etc", "customers", "churned", TrainingSpec())
    with pytest.raises(NotFound, match="has no production version"):
        registry.production("churn")


def test_register_is_idempotent_by_run_id(registry: Registry, store: RegistryStore) -> None:
    first = registry.register(candidate("run-1", 0.9))
    again = registry.register(candidate("run-1", 0.9))
    assert first.version.version == again.version.version == "1"
    assert first.promoted and again.promoted
    assert again.decision_reason == first.decision_reason
    assert [v.version for v in registry.list_versions("churn")] == ["1"]
    assert [e.type for e in outbox_events(store)] == ["ModelRegistered", "ModelPromoted"]


def test_outbox_rows_are_written_in_the_decision_transaction(
    registry: Registry, store: RegistryStore
) -> None:
    registry.register(candidate("run-1", 0.9, correlation_id="drift-corr"))
    events = outbox_events(store)
    promoted = events[1].model_promoted
    assert (promoted.model, promoted.version, promoted.action) == ("churn", "1", "promote")
    assert promoted.artifact_sha256 == SHA
    assert all(e.correlation_id == "drift-corr" and e.causation_id == "cause-1" for e in events)
    with pytest.raises(InvalidInput):  # a failing registration leaves no trace at all
        registry.register(Candidate(**{**candidate("run-2", 0.9).__dict__, "metrics": {}}))
    assert len(outbox_events(store)) == 2
    assert [v.version for v in registry.list_versions("churn")] == ["1"]


def test_rejected_candidate_keeps_the_champion(registry: Registry, store: RegistryStore) -> None:
    registry.register(candidate("run-1", 0.9))
    reg = registry.register(candidate("run-2", 0.895, champion="1", champ_acc=0.9))
    assert not reg.promoted and reg.version.status == "rejected"
    assert "0.895 < champion 0.900 + margin 0.000" in reg.decision_reason
    assert registry.production("churn").version == "1"
    assert outbox_events(store)[-1].type == "ModelRejected"


def test_promotion_archives_the_old_champion_and_rollback_restores_it(
    registry: Registry, store: RegistryStore
) -> None:
    registry.register(candidate("run-1", 0.7))
    reg = registry.register(candidate("run-2", 0.9, champion="1", champ_acc=0.7))
    assert reg.promoted
    assert registry.get_version("churn", "1").status == "archived"
    model = registry.get_model("churn")
    assert (model.production_version, model.latest_version) == ("2", 2)

    with pytest.raises(InvalidInput, match="reason"):
        registry.rollback("churn", "", "")
    back = registry.rollback("churn", "", "v2 misbehaves")
    assert back.version == "1" and back.status == "production"
    assert registry.get_version("churn", "2").status == "archived"
    with store.transaction() as tx:
        history = tx.alias_history("churn")
        audit = [row["action"] for row in tx.audit("churn")]
    assert [(h["version"], h["previous_version"], h["actor"]) for h in history] == [
        (1, None, "policy"),
        (2, 1, "policy"),
        (1, 2, "operator"),
    ]
    assert history[-1]["reason"] == "v2 misbehaves"
    assert audit[-1] == "rollback"
    last = outbox_events(store)[-1].model_promoted
    assert (last.action, last.version, last.previous_version) == ("rollback", "1", "2")


def test_rollback_errors_say_why(registry: Registry) -> None:
    with pytest.raises(Conflict, match="no production version"):
        registry.rollback("churn", "", "why")
    registry.register(candidate("run-1", 0.9))
    with pytest.raises(Conflict, match="first"):
        registry.rollback("churn", "", "why")
    with pytest.raises(NotFound, match="no version '7'"):
        registry.rollback("churn", "7", "why")


def test_champion_changed_during_training_is_rejected(registry: Registry) -> None:
    registry.register(candidate("run-1", 0.9))
    reg = registry.register(candidate("run-2", 0.99))  # trained when there was no champion
    assert not reg.promoted and "champion is version 1" in reg.decision_reason


def test_manual_promote_reject_and_search(registry: Registry) -> None:
    registry.register(candidate("run-1", 0.9, correlation_id="a"))
    registry.register(candidate("run-2", 0.5, champion="1", champ_acc=0.9, correlation_id="b"))
    with pytest.raises(Conflict, match="in production"):
        registry.reject("churn", "1", "no")
    promoted = registry.promote("churn", "2", "operator knows better")
    assert promoted.status == "production"
    assert registry.reject("churn", "1", "bad").status == "rejected"
    assert [v.version for v in registry.search_versions("", "", "b")] == ["2"]
    assert [v.version for v in registry.search_versions("churn", "rejected", "")] == ["1"]
    assert registry.lineage("churn", "2").correlation_id == "b"
    assert registry.lineage("churn", "2").version == "2"


def test_migrations_run_once_and_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = RegistryStore(path)
    Registry(store).create_model("m", "d", "y", TrainingSpec())
    store.close()
    reopened = RegistryStore(path)
    try:
        assert Registry(reopened).get_model("m").dataset == "d"
    finally:
        reopened.close()


def test_both_below_the_floor_promotes_the_better_and_publishes_attention(
    registry: Registry, store: RegistryStore
) -> None:
    registry.register(candidate("run-1", 0.9))
    truth = np.array(["a"] * 1000)
    cand = np.array(["a"] * 536 + ["b"] * 464)
    champ = np.array(["b"] * 150 + ["a"] * 236 + ["b"] * 614)  # right on 236 of 1000
    comparison = compare(truth, cand, champ)
    drifted = replace(
        candidate("run-2", 0.536, champion="1", champ_acc=0.236), comparison=comparison
    )
    reg = registry.register(drifted)
    assert reg.promoted and reg.outcome == "promoted" and "both fail the floor" in reg.attention
    assert [e.type for e in outbox_events(store)][-4:] == [
        "ModelRegistered",
        "ModelNeedsAttention",
        "ModelPromoted",
        "ModelShadowed",  # the previous version guards the new one's probation
    ]
    audit = registry.history("churn").audit
    register = next(a for a in audit if a.action == "register" and a.version == "2")
    assert register.details["comparison"]["p_value"] < 0.05
    assert any(a.action == "attention" for a in audit)


def test_an_inconclusive_comparison_says_how_many_rows_it_needs(registry: Registry) -> None:
    registry.register(candidate("run-1", 0.87))
    truth = np.array(["a"] * 102)
    cand = np.array(["a"] * 89 + ["b"] * 13)
    champ = np.array(["b"] * 5 + ["a"] * 84 + ["a"] * 5 + ["b"] * 8)
    reg = registry.register(
        replace(
            candidate("run-2", 89 / 102, champion="1", champ_acc=89 / 102),
            comparison=compare(truth, cand, champ),
        )
    )
    assert not reg.promoted and reg.outcome == "inconclusive" and reg.rows_needed > 102
    again = registry.register(candidate("run-2", 89 / 102, champion="1", champ_acc=89 / 102))
    assert again.outcome == "inconclusive"  # a retried registration reads it back
