"""Regression specs in the registry: defaults that follow the task, validation against the task's
estimators and metrics, and a policy that knows lower is better (a ceiling, relative margins and
slice tolerances, rows needed from the comparison's spread), with no probation without evidence."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from driftloop.services.registry.core.domain import (
    Candidate,
    Lineage,
    PromotionPolicy,
    SliceMetric,
    TrainingSpec,
    validate_spec,
    with_defaults,
)
from driftloop.services.registry.core.policy import decide, decide_live, decide_probation
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.specs import parse_yaml
from driftloop.services.registry.core.store import RegistryStore
from driftloop.shared.errors import InvalidInput
from driftloop.shared.paired import PairedComparison, compare, rows_needed

pytestmark = pytest.mark.unit
SHA = "cd" * 32
MAE = PromotionPolicy(metric="mae", margin=0.0, floor=0.0, min_improvement=0.05)


def spec(text: str) -> TrainingSpec:
    return with_defaults(parse_yaml(text).spec)


# --- defaults and validation ---


def test_regression_defaults_follow_the_task() -> None:
    s = spec("task: regression\nsearch: {param_grid: {max_depth: [2, 4]}}")
    assert (s.task, s.estimator, s.policy.metric, s.search.scoring) == (
        "regression",
        "gradient_boosting",
        "mae",
        "mae",
    )
    assert s.policy.floor == 0.0  # no ceiling: an error's scale is the target's
    assert s.policy.min_improvement == 0.05  # relative error reduction
    assert spec("task: regression\npolicy: {margin: 0.1}").policy.min_improvement == (
        pytest.approx(0.12)
    )
    assert validate_spec(s, "price") is s


def test_classification_defaults_and_hash_are_unchanged() -> None:
    s = spec("")
    assert (s.task, s.estimator, s.policy.metric) == (
        "classification",
        "logistic_regression",
        "accuracy",
    )
    assert (s.policy.floor, s.policy.min_improvement) == (0.6, 0.03)
    # a spec stored before tasks existed (task "") hashes as the defaulted one does
    assert replace(s, task="").sha256() == s.sha256()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task: ranking", "'task': unknown task 'ranking'"),
        ("task: regression\nestimator: logistic_regression", "'estimator': unknown estimator"),
        (
            "task: regression\nestimator: sklearn.linear_model.LogisticRegression",
            "it is a classification estimator: set task: classification",
        ),
        ("task: regression\npolicy: {metric: accuracy}", "'policy.metric': 'accuracy' measures"),
        ("policy: {metric: mae}", "'policy.metric': 'mae' measures regression"),
        (
            "task: regression\nsearch: {param_grid: {max_depth: [2, 4]}, scoring: f1_macro}",
            "'search.scoring': 'f1_macro' measures classification",
        ),
        ("task: regression\npolicy: {floor: -1}", "'policy.floor': -1.0 must be a number >= 0"),
        ("task: regression\npolicy: {metric: r2, floor: 1.5}", "'policy.floor': 1.5 must be"),
        ("task: regression\npolicy: {mode: shadow}", "'policy.mode': 'shadow' waits"),
    ],
)
def test_regression_specs_are_checked_against_the_task(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_spec(spec(text), "price")


def test_a_ceiling_in_the_targets_unit_is_valid() -> None:
    s = spec("task: regression\npolicy: {metric: rmse, floor: 250.0, margin: 0.02}")
    assert validate_spec(s, "price").policy.floor == 250.0


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    store = RegistryStore(tmp_path / "registry.db")
    yield Registry(store)
    store.close()


def test_parameters_are_checked_against_the_regressor(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="'params.C': Ridge has no parameter 'C'"):
        registry.create_model(
            "p",
            "houses",
            "price",
            TrainingSpec(),
            "task: regression\nestimator: ridge\nparams: {C: 1}",
        )
    model = registry.create_model(
        "p",
        "houses",
        "price",
        TrainingSpec(),
        "task: regression\nestimator: ridge\nparams: {alpha: 0.5}",
    )
    assert model.spec.task == "regression"
    assert registry.get_spec("p").spec.task == "regression"  # stored and read back


def test_the_task_is_fixed_once_a_model_has_versions(registry: Registry) -> None:
    registry.create_model("p", "houses", "price", TrainingSpec())
    assert registry.set_spec("p", TrainingSpec(), "task: regression").spec.task == "regression"
    registry.register(candidate("run-1", {"mae": 9.0}))
    with pytest.raises(InvalidInput, match="'task': model p has 1 versions trained for regression"):
        registry.set_spec("p", TrainingSpec(), "task: classification")


# --- the policy, lower is better ---


def test_a_first_version_is_held_to_the_ceiling_when_there_is_one() -> None:
    assert decide(MAE, {"mae": 12.3}, None).reason == "no champion; mae 12.300, no ceiling set"
    ceiling = replace(MAE, floor=10.0)
    refused = decide(ceiling, {"mae": 12.3}, None)
    assert not refused.promote and refused.reason == "mae 12.300 > ceiling 10.000"
    kept = decide(ceiling, {"mae": 9.0}, None)
    assert kept.promote and kept.reason == "no champion; mae 9.000 <= ceiling 10.000"


def test_without_a_comparison_the_margin_is_a_relative_error_reduction() -> None:
    policy = replace(MAE, margin=0.05, min_improvement=0.07)
    better = decide(policy, {"mae": 9.0}, {"mae": 10.0})
    assert better.promote
    assert better.reason == (
        "mae 9.000 vs champion 10.000: relative error reduction +0.100 >= margin 0.050 "
        "on the same holdout"
    )
    assert not decide(policy, {"mae": 9.7}, {"mae": 10.0}).promote  # 3% < 5%
    assert not decide(MAE, {"mae": 11.0}, {"mae": 10.0}).promote  # more error is worse


def errors(n: int, candidate_sd: float, champion_sd: float, seed: int = 1) -> PairedComparison:
    """Two regressors of the same rows with correlated errors, compared on MAE."""
    rng = np.random.default_rng(seed)
    y, z, w = rng.normal(100, 20, n), rng.normal(0, 1, n), rng.normal(0, 1, n)
    champion = y + champion_sd * z
    candidate = y + candidate_sd * (0.8 * z + 0.6 * w)
    return compare(y, candidate, champion, "mae")


def decide_paired(c: PairedComparison, policy: PromotionPolicy = MAE):
    return decide(policy, {"mae": c.candidate}, {"mae": c.champion}, comparison=c)


def test_a_relative_margin_on_the_paired_comparison() -> None:
    c = errors(3000, 9.0, 10.0)  # about 10% less error, interval about [+0.08, +0.12]
    assert 0.05 < c.lower < c.upper < 0.15
    promoted = decide_paired(c, replace(MAE, margin=0.05, min_improvement=0.07))
    assert promoted.promote and promoted.outcome == "promoted"
    assert "margin 0.050 (relative error reduction)" in promoted.reason
    strict = decide_paired(c, replace(MAE, margin=0.15, min_improvement=0.2))
    assert not strict.promote and strict.outcome == "rejected"
    assert "not better by 0.200 (relative error reduction)" in strict.reason


def test_an_inconclusive_regression_needs_the_rows_its_spread_says() -> None:
    c = errors(80, 9.5, 10.0)
    d = decide_paired(c)
    assert not d.promote and d.outcome == "inconclusive"
    assert c.spread > 0
    expected = rows_needed(0.05, 0.0, confidence=c.confidence, power=0.8, spread=c.spread)
    assert d.rows_needed == expected and f"about {expected} rows" in d.reason
    # the classification formula on regression's discordance (every prediction differs) is
    # another number: the spread is what was used
    assert expected != rows_needed(0.05, 0.0, discordance=c.discordance)
    # a comparison sent without its spread (an older client) waits for the assumed one
    old = decide_paired(replace(c, spread=0.0))
    assert old.rows_needed == rows_needed(0.05, 0.0, spread=0.8)


def test_a_candidate_above_the_ceiling_loses_to_a_champion_within_it() -> None:
    c = errors(3000, 12.0, 10.0)
    d = decide_paired(c, replace(MAE, floor=c.champion + 0.5))
    assert not d.promote and d.outcome == "rejected" and not d.attention
    assert d.reason.startswith(f"mae {c.candidate:.3f} > ceiling {c.champion + 0.5:.3f}")
    assert "(champion" in d.reason and "is within it" in d.reason


def test_both_above_the_ceiling_promotes_the_significantly_better_and_asks_a_human() -> None:
    c = errors(3000, 9.0, 10.0)
    d = decide_paired(c, replace(MAE, floor=1.0))
    assert d.promote and d.outcome == "promoted"
    assert d.reason.startswith("both above ceiling 1.000, candidate significantly better")
    assert "both fail the ceiling" in d.attention and "> 1.000" in d.attention


def mae_slice(value: str, mae: float, rows: int = 100) -> SliceMetric:
    return SliceMetric("region", value, rows, {"mae": mae})


def test_slice_tolerance_is_relative_for_an_error() -> None:
    policy = replace(MAE, slice_tolerance=0.05)
    better = errors(3000, 9.0, 10.0)
    champions = (mae_slice("north", 10.0), mae_slice("south", 10.0), mae_slice("east", 10.0))
    fine = decide(
        policy,
        {"mae": better.candidate},
        {"mae": better.champion},
        # 4% more error on north is within 5%; south is far better (not a drop)
        (mae_slice("north", 10.4), mae_slice("south", 5.0), mae_slice("east", 9.0)),
        champions,
        better,
    )
    assert fine.promote and fine.reason.endswith("; no regression on 3 slices")
    worse = decide(
        policy,
        {"mae": better.candidate},
        {"mae": better.champion},
        (mae_slice("north", 11.0), mae_slice("south", 5.0), mae_slice("east", 9.0)),
        champions,
        better,
    )
    assert not worse.promote
    assert worse.reason == (
        "slice region=north: mae 11.000 vs champion 10.000 is 0.100 worse (relative), beyond "
        "the slice tolerance 0.050 on 100 holdout rows"
    )
    assert worse.details["slice_regressions"][0]["drop"] == pytest.approx(0.1)


def test_live_verdicts_follow_the_direction() -> None:
    live = replace(MAE, margin=0.05, min_improvement=0.07, shadow_min_labels=10)
    assert decide_live(live, 50, {"mae": 9.0}, {"mae": 10.0}).outcome == "promoted"
    assert decide_live(live, 50, {"mae": 11.0}, {"mae": 10.0}).outcome == "rejected"
    rollback = decide_probation(live, 50, {"mae": 8.0}, {"mae": 10.0})
    assert rollback.outcome == "rollback"  # the previous version had 20% less error
    assert decide_probation(live, 50, {"mae": 10.0}, {"mae": 8.0}).outcome == "waiting"


def test_no_rollback_without_live_evidence_of_the_metric() -> None:
    policy = replace(MAE, shadow_min_labels=10, shadow_max_labels=100)
    accuracy_only = {"accuracy": 0.1}
    waiting = decide_probation(policy, 50, {"accuracy": 0.9}, accuracy_only)
    assert waiting.outcome == "waiting" and "no live mae" in waiting.reason
    kept = decide_probation(policy, 100, {"accuracy": 0.9}, accuracy_only)
    assert kept.outcome == "kept" and "no rollback is made without evidence" in kept.reason


# --- the registry: a regression promotion opens no probation ---


def candidate(
    run_id: str,
    metrics: dict[str, float],
    champion: str = "",
    champion_metrics: dict[str, float] | None = None,
    comparison: PairedComparison | None = None,
) -> Candidate:
    return Candidate(
        model="p",
        run_id=run_id,
        artifact_uri=f"artifacts/p/{run_id}/model.skops",
        artifact_sha256=SHA,
        profile_uri="",
        metrics=metrics,
        champion_metrics=champion_metrics or {},
        champion_version=champion,
        lineage=Lineage(run_id=run_id, correlation_id=f"corr-{run_id}", trigger="drift"),
        comparison=comparison,
    )


def test_a_regression_promotion_opens_no_probation(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "registry.db")
    try:
        registry = Registry(store)
        registry.create_model("p", "houses", "price", TrainingSpec(), "task: regression")
        first = registry.register(candidate("run-1", {"mae": 8.0, "rmse": 10.0}))
        assert first.promoted and first.decision_reason == "no champion; mae 8.000, no ceiling set"
        c = errors(3000, 9.0, 10.0)
        second = registry.register(
            candidate("run-2", {"mae": c.candidate}, "1", {"mae": c.champion}, c)
        )
        assert second.promoted and registry.production("p").version == "2"
        with store.transaction() as tx:
            assert tx.probation("p") == "" and tx.shadow("p") is None
        assert not any(a.action == "probation" for a in registry.history("p").audit)
    finally:
        store.close()
