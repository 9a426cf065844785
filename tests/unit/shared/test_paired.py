"""The paired comparison (driftloop.shared.paired): McNemar's exact p-value and a bootstrap
interval on the same rows, the macro-F1 bootstrap, and the rows a comparison needs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from driftloop.shared.errors import InvalidInput
from driftloop.shared.paired import PairedComparison, compare, rows_needed

pytestmark = pytest.mark.unit


def outcomes(n01: int, n10: int, both: int, neither: int) -> tuple[np.ndarray, ...]:
    """Labels and two models' predictions with the given counts of paired outcomes."""
    truth = np.array(["a"] * (n01 + n10 + both + neither))
    right, wrong = "a", "b"
    cand = [right] * n01 + [wrong] * n10 + [right] * both + [wrong] * neither
    champ = [wrong] * n01 + [right] * n10 + [right] * both + [wrong] * neither
    return truth, np.array(cand), np.array(champ)


def test_accuracy_uses_mcnemar_on_the_discordant_rows() -> None:
    found = compare(*outcomes(n01=40, n10=15, both=800, neither=145))
    assert found.method == "mcnemar-exact" and found.rows == 1000
    assert found.difference == pytest.approx(0.025)
    assert found.candidate == pytest.approx(0.84) and found.champion == pytest.approx(0.815)
    expected = stats.binomtest(40, 55, 0.5, alternative="greater").pvalue
    assert found.p_value == pytest.approx(expected)
    assert found.discordance == pytest.approx(0.055)
    assert found.lower < found.difference < found.upper
    assert found.lower > 0  # 40 vs 15 discordant rows: significantly better


def test_a_tie_on_100_rows_is_not_evidence_either_way() -> None:
    found = compare(*outcomes(n01=6, n10=6, both=75, neither=13))
    assert found.difference == 0 and found.p_value > 0.5
    assert found.lower < 0 < found.upper
    # the case: 0.873 vs 0.873 on 102 rows says nothing about a 3-point improvement
    assert found.upper > 0.03


def test_identical_models_give_a_degenerate_interval() -> None:
    found = compare(*outcomes(n01=0, n10=0, both=90, neither=10))
    assert (found.lower, found.upper, found.p_value) == (0.0, 0.0, 1.0)


def test_the_interval_is_seeded_and_round_trips() -> None:
    args = outcomes(n01=30, n10=20, both=400, neither=50)
    first, again = compare(*args), compare(*args)
    assert first == again
    assert PairedComparison.from_dict(first.to_dict()) == first
    assert "p=" in first.summary() and "90% interval" in first.summary()


def test_f1_macro_bootstrap_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    truth = rng.choice(["x", "y", "z"], 600)
    cand = np.where(rng.random(600) < 0.85, truth, rng.choice(["x", "y", "z"], 600))
    champ = np.where(rng.random(600) < 0.7, truth, rng.choice(["x", "y", "z"], 600))
    found = compare(truth, cand, champ, "f1_macro", resamples=500)
    assert found.method == "paired-bootstrap"
    assert found.candidate == pytest.approx(f1_score(truth, cand, average="macro"))
    assert found.champion == pytest.approx(f1_score(truth, champ, average="macro"))
    assert found.lower > 0 and found.p_value < 0.05


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.array(["a"]), np.array(["a", "b"]), np.array(["a"])), "same non-zero"),
        ((np.array([]), np.array([]), np.array([])), "same non-zero"),
    ],
)
def test_mismatched_rows_are_refused(args: tuple[np.ndarray, ...], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        compare(*args)


def test_unknown_metric_and_bad_confidence_are_refused() -> None:
    args = outcomes(1, 1, 1, 1)
    with pytest.raises(InvalidInput, match="no paired comparison"):
        compare(*args, "auc")
    with pytest.raises(InvalidInput, match="a regression comparison needs numbers"):
        compare(*args, "rmse")
    with pytest.raises(InvalidInput, match="confidence"):
        compare(*args, confidence=1.0)


def test_rows_needed_grows_with_discordance_and_a_smaller_effect() -> None:
    base = rows_needed(0.03, discordance=0.15)
    assert 900 < base < 1200
    assert rows_needed(0.03, discordance=0.3) > base
    assert rows_needed(0.06, discordance=0.15) < base / 3
    assert rows_needed(0.03, 0.01, discordance=0.15) > 2 * base
    with pytest.raises(InvalidInput, match="must exceed the margin"):
        rows_needed(0.01, 0.01)


def test_rows_needed_delivers_its_power() -> None:
    """Simulated: with the rows it asks for, a true 3-point improvement shows as a lower bound
    above 0 in about `power` of the trials; with no improvement, rarely (about 1 - confidence)."""
    rng = np.random.default_rng(11)
    n = rows_needed(0.03, discordance=0.15)
    hits = misses = 0
    for _ in range(200):
        # discordant share 0.15, split so that the candidate is 0.03 better (or equal)
        for delta, counter in ((0.03, "hit"), (0.0, "false")):
            p01, p10 = (0.15 + delta) / 2, (0.15 - delta) / 2
            draw = rng.multinomial(n, [p01, p10, 1 - p01 - p10])
            truth, cand, champ = outcomes(int(draw[0]), int(draw[1]), int(draw[2]), 0)
            found = compare(truth, cand, champ, resamples=400)
            significant = found.lower >= 0 and found.p_value <= 0.05
            if counter == "hit":
                hits += significant
            else:
                misses += significant
    assert 0.7 <= hits / 200 <= 0.92
    assert misses / 200 <= 0.1


def test_regression_comparison_is_a_relative_error_reduction_with_its_spread() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(100, 20, 2000)
    better = truth + rng.normal(0, 8, 2000)
    worse = truth + rng.normal(0, 10, 2000)
    found = compare(truth, better, worse, "mae")
    assert found.difference == pytest.approx((found.champion - found.candidate) / found.champion)
    assert 0.1 < found.difference < 0.3 and found.lower > 0 and found.p_value < 0.05
    assert 0.5 < found.spread < 1.5
    reverse = compare(truth, worse, better, "mae")
    assert reverse.upper < 0 and reverse.p_value > 0.95
    same = compare(truth, better, better, "rmse")
    assert same.difference == 0 and same.discordance == 0
    # R² is a score: a plain difference, higher is better
    r2 = compare(truth, better, worse, "r2")
    assert r2.difference == pytest.approx(r2.candidate - r2.champion) and r2.difference > 0
    # a champion that cannot score a row (NaN) loses it without breaking the arithmetic
    gone = compare(truth, better, np.full(2000, np.nan), "mae")
    assert gone.lower > 0.9


def test_regression_rows_needed_follows_the_spread() -> None:
    base = rows_needed(0.05, spread=0.8)
    assert base == pytest.approx(((1.645 + 0.842) * 0.8 / 0.05) ** 2, rel=0.01)
    assert rows_needed(0.05, spread=1.6) == pytest.approx(4 * base, rel=0.01)
    assert rows_needed(0.05, -0.02, spread=0.8) < base


def test_mape_is_refused_where_the_target_reaches_zero() -> None:
    truth = np.array([0.0, 1.0, 2.0, 3.0])
    with pytest.raises(InvalidInput, match="MAPE"):
        compare(truth, truth + 1, truth + 2, "mape")
