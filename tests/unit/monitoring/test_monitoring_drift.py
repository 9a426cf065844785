"""Unit tests of the drift tests: KS and chi-squared per column, Bonferroni threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.services.monitoring.core.drift import chi2_test, evaluate_window, ks_test
from driftloop.shared.profile import build_profile

pytestmark = pytest.mark.unit

FREQS = {"red": 0.5, "green": 0.3, "blue": 0.2}


def colours(rng: np.random.Generator, n: int, p: list[float]) -> pd.Series:
    return pd.Series(rng.choice(["red", "green", "blue"], n, p=p))


def test_chi2_passes_same_frequencies() -> None:
    rng = np.random.default_rng(1)
    result = chi2_test(FREQS, 5000, colours(rng, 300, [0.5, 0.3, 0.2]))
    assert result is not None
    assert result[1] > 0.01


def test_chi2_flags_an_unseen_category() -> None:
    rng = np.random.default_rng(2)
    live = pd.concat([colours(rng, 280, [0.5, 0.3, 0.2]), pd.Series(["purple"] * 20)])
    result = chi2_test(FREQS, 5000, live)
    assert result is not None
    statistic, p_value = result
    assert p_value < 1e-6 and statistic > 30


def test_chi2_skips_when_the_reference_has_fewer_than_two_categories() -> None:
    assert chi2_test({"only": 1.0}, 100, pd.Series(["only", "new"] * 50)) is None
    assert chi2_test(FREQS, 100, pd.Series([None, None], dtype=object)) is None


def test_chi2_pools_rare_reference_categories_instead_of_over_reacting() -> None:
    freqs = {"a": 0.598, "b": 0.4, "rare1": 0.001, "rare2": 0.001}
    live = pd.Series(["a"] * 176 + ["b"] * 120 + ["rare1"] * 4)  # 4 where 0.3 were expected
    result = chi2_test(freqs, 10_000, live)
    assert result is not None
    assert result[1] > 0.001


def test_ks_ignores_non_finite_values_and_detects_a_shift() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(0, 1, 2000).tolist()
    same = pd.Series(np.r_[rng.normal(0, 1, 300), [np.nan, np.inf, -np.inf]])
    shifted = pd.Series(rng.normal(1.5, 1, 300))
    same_result, shifted_result = ks_test(reference, same), ks_test(reference, shifted)
    assert same_result is not None and shifted_result is not None
    assert same_result[1] > 0.01
    assert shifted_result[1] < 1e-10
    assert ks_test(reference, pd.Series([np.nan, np.inf])) is None


def test_evaluate_window_uses_bonferroni_and_names_the_drifted_feature() -> None:
    rng = np.random.default_rng(4)
    ref = pd.DataFrame(
        {
            "x": rng.normal(0, 1, 3000),
            "y": rng.normal(5, 2, 3000),
            "colour": colours(rng, 3000, [0.5, 0.3, 0.2]),
        }
    )
    profile = build_profile("m", "1", ref, pd.Series(rng.choice(["0", "1"], 3000)))
    live = pd.DataFrame(
        {
            "x": rng.normal(0, 1, 300),
            "y": rng.normal(8, 2, 300),
            "colour": colours(rng, 300, [0.5, 0.3, 0.2]),
            "_prediction": rng.choice(["0", "1"], 300),
        }
    )
    result = evaluate_window(profile, live, alpha=0.001)
    by_name = {f.feature: f for f in result.features}
    assert set(by_name) == {"x", "y", "colour", "_prediction"}
    assert {f.threshold for f in result.features} == {0.001 / 4}
    assert by_name["x"].test == "ks" and by_name["colour"].test == "chi2"
    assert by_name["_prediction"].test == "chi2"
    assert [f.feature for f in result.features if f.drifted] == ["y"]
    assert result.drift_share == 0.25 and result.drifted
