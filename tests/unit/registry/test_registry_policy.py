"""The promotion policy: floor without a champion, margin against one, missing metrics."""

from __future__ import annotations

import pytest

from driftloop.services.registry.core.domain import PromotionPolicy
from driftloop.services.registry.core.policy import decide
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit

POLICY = PromotionPolicy(metric="accuracy", margin=0.01, floor=0.6)


def test_first_version_above_floor_is_promoted() -> None:
    d = decide(POLICY, {"accuracy": 0.9}, None)
    assert d.promote
    assert "0.900 >= floor 0.600" in d.reason


def test_first_version_below_floor_is_rejected() -> None:
    d = decide(POLICY, {"accuracy": 0.55}, None)
    assert not d.promote
    assert d.reason == "accuracy 0.550 < floor 0.600"


def test_candidate_must_beat_champion_by_margin() -> None:
    d = decide(POLICY, {"accuracy": 0.953}, {"accuracy": 0.512})
    assert d.promote
    assert d.reason == "accuracy 0.953 >= champion 0.512 + margin 0.010 on the same holdout"
    assert not decide(POLICY, {"accuracy": 0.805}, {"accuracy": 0.8}).promote


def test_exactly_the_margin_is_enough() -> None:
    assert decide(POLICY, {"accuracy": 0.95}, {"accuracy": 0.94}).promote


def test_equal_metrics_are_rejected_with_a_margin_and_accepted_without() -> None:
    d = decide(POLICY, {"accuracy": 0.8}, {"accuracy": 0.8})
    assert not d.promote
    assert "0.800 < champion 0.800 + margin 0.010" in d.reason
    no_margin = PromotionPolicy(metric="accuracy", margin=0.0, floor=0.6)
    assert decide(no_margin, {"accuracy": 0.8}, {"accuracy": 0.8}).promote


def test_beating_the_champion_below_the_floor_is_rejected() -> None:
    d = decide(POLICY, {"accuracy": 0.5}, {"accuracy": 0.3})
    assert not d.promote
    assert "floor" in d.reason


def test_missing_metric_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="accuracy"):
        decide(POLICY, {"f1_macro": 0.9}, None)
    with pytest.raises(InvalidInput, match="champion metrics"):
        decide(POLICY, {"accuracy": 0.9}, {"f1_macro": 0.9})


def test_policy_metric_is_configurable() -> None:
    f1 = PromotionPolicy(metric="f1_macro", margin=0.05, floor=0.5)
    assert decide(f1, {"f1_macro": 0.7, "accuracy": 0.1}, {"f1_macro": 0.6}).promote
