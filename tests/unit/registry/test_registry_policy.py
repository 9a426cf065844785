"""The promotion policy: floor without a champion, margin against one, missing metrics; and the
decisions on a paired comparison (inconclusive with the rows needed, the floor both fail)."""

from __future__ import annotations

import numpy as np
import pytest

from driftloop.services.registry.core.domain import PromotionPolicy
from driftloop.services.registry.core.policy import Decision, decide
from driftloop.shared.errors import InvalidInput
from driftloop.shared.paired import PairedComparison, compare

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


# --- decisions on a paired comparison (the same rows scored by both models) ---

PAIRED = PromotionPolicy(metric="accuracy", margin=0.0, floor=0.6)


def paired(n01: int, n10: int, both: int, neither: int) -> PairedComparison:
    truth = np.array(["a"] * (n01 + n10 + both + neither))
    cand = np.array(["a"] * n01 + ["b"] * n10 + ["a"] * both + ["b"] * neither)
    champ = np.array(["b"] * n01 + ["a"] * n10 + ["a"] * both + ["b"] * neither)
    return compare(truth, cand, champ)


def decide_paired(c: PairedComparison, policy: PromotionPolicy = PAIRED) -> Decision:
    return decide(policy, {"accuracy": c.candidate}, {"accuracy": c.champion}, comparison=c)


def test_the_issue_tie_on_102_rows_is_inconclusive_with_the_rows_it_needs() -> None:
    """0.873 vs 0.873 on a 102-row holdout: not a rejection for good, a request for data."""
    d = decide_paired(paired(n01=5, n10=5, both=84, neither=8))
    assert not d.promote and d.outcome == "inconclusive"
    assert d.reason.startswith("inconclusive") and f"about {d.rows_needed} rows" in d.reason
    assert 50 < d.rows_needed < 2000
    assert d.details["comparison"]["rows"] == 102 and "p_value" in d.details["comparison"]


def test_a_small_holdout_win_is_not_a_promotion() -> None:
    """The harmless-shift case: 0.872 vs 0.853 on ~100 rows was noise, and promoted a worse
    model; on a paired test it is not significant."""
    d = decide_paired(paired(n01=6, n10=4, both=81, neither=9))
    assert not d.promote and d.outcome == "inconclusive"


def test_a_significant_improvement_is_promoted_with_its_evidence() -> None:
    d = decide_paired(paired(n01=60, n10=20, both=800, neither=120))
    assert d.promote and d.outcome == "promoted"
    assert "lower bound +0.0" in d.reason and "p=" in d.reason and "mcnemar-exact" in d.reason


def test_an_upper_bound_below_min_improvement_ends_the_episode() -> None:
    d = decide_paired(paired(n01=20, n10=22, both=3000, neither=300))
    assert not d.promote and d.outcome == "rejected" and d.rows_needed == 0
    assert "champion is as good" in d.reason


def test_the_margin_is_a_bound_not_a_point_estimate() -> None:
    c = paired(n01=60, n10=20, both=800, neither=120)  # +0.04, lower bound about +0.025
    strict = PromotionPolicy(metric="accuracy", margin=0.03, floor=0.6, min_improvement=0.05)
    d = decide_paired(c, strict)
    assert c.difference > 0.03 and not d.promote and d.outcome == "inconclusive"


def test_both_below_the_floor_promotes_the_significantly_better_and_asks_a_human() -> None:
    """The issue's strong drift: 0.536 beats the drifted champion; the floor 0.6 kept the worse."""
    d = decide_paired(paired(n01=150, n10=50, both=386, neither=414))
    assert d.promote and d.outcome == "promoted"
    assert "both fail the floor" in d.attention and "promoted" in d.attention


def test_both_below_the_floor_without_evidence_keeps_the_champion_and_asks_a_human() -> None:
    d = decide_paired(paired(n01=10, n10=9, both=40, neither=41))
    assert not d.promote and d.outcome == "inconclusive"
    assert "kept the champion" in d.attention


def test_below_the_floor_while_the_champion_reaches_it_is_rejected() -> None:
    d = decide_paired(paired(n01=5, n10=300, both=350, neither=345))
    assert not d.promote and d.outcome == "rejected" and not d.attention
    assert "floor" in d.reason


def test_a_negative_margin_is_a_non_inferiority_test() -> None:
    """Prefer the fresher model unless it is worse: two perfect models agree on every row."""
    fresh = PromotionPolicy(metric="accuracy", margin=-0.01, floor=0.5)
    same = paired(n01=0, n10=0, both=500, neither=0)
    assert decide_paired(same, fresh).promote
    worse = paired(n01=5, n10=40, both=400, neither=55)
    assert not decide_paired(worse, fresh).promote
