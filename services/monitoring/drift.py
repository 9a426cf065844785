"""Drift tests: one live window against a model's reference profile, feature by feature.

Numeric features get a two-sample Kolmogorov-Smirnov test, categorical features and the
prediction a chi-squared test of live counts against reference frequencies; Bonferroni-corrected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from driftloop.shared.profile import PREDICTION, FeatureProfile, ReferenceProfile

MIN_EXPECTED = 5.0
"""Reference categories expected fewer times than this in the window are pooled (see _buckets)."""


class DriftPolicy(BaseModel):
    """When the monitor evaluates a window and when drift becomes a decision."""

    model_config = ConfigDict(frozen=True)

    window_rows: int = Field(300, gt=0)
    min_rows: int = Field(200, gt=0)
    eval_every: int = Field(50, gt=0)
    alpha: float = Field(0.001, gt=0, lt=1)
    persistence: int = Field(2, gt=0)
    episode_timeout_s: float = Field(600.0, gt=0)


@dataclass(frozen=True)
class FeatureDrift:
    """Evidence for one tested column: which test, its statistic and p-value, the threshold."""

    feature: str
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class WindowEvaluation:
    """The result of testing one live window: every test result and the share that drifted."""

    features: tuple[FeatureDrift, ...]
    live_rows: int
    reference_rows: int

    @property
    def drifted(self) -> bool:
        return any(f.drifted for f in self.features)

    @property
    def drift_share(self) -> float:
        if not self.features:
            return 0.0
        return sum(f.drifted for f in self.features) / len(self.features)


def evaluate_window(
    profile: ReferenceProfile, window: pd.DataFrame, alpha: float
) -> WindowEvaluation:
    """Test every profiled column present in `window`; threshold = alpha / number of tests.

    Columns missing from the window, with too few finite values, or categorical with fewer
    than two reference categories are not tested (and do not count towards the correction).
    """
    raw: list[tuple[str, Literal["ks", "chi2"], float, float]] = []
    columns = [*profile.features, *([profile.prediction] if profile.prediction else [])]
    for column in columns:
        if column.name not in window.columns:
            continue
        result = _test_column(column, window[column.name])
        if result is not None:
            raw.append((column.name, *result))
    threshold = alpha / len(raw) if raw else alpha
    features = tuple(
        FeatureDrift(
            feature=name,
            test=test,
            statistic=stat,
            p_value=p,
            threshold=threshold,
            drifted=bool(p < threshold),
        )
        for name, test, stat, p in raw
    )
    return WindowEvaluation(features=features, live_rows=len(window), reference_rows=profile.rows)


def _test_column(
    column: FeatureProfile, live: pd.Series
) -> tuple[Literal["ks", "chi2"], float, float] | None:
    if column.kind == "numeric" and column.name != PREDICTION:
        ks = ks_test(column.sample, live)
        return None if ks is None else ("ks", *ks)
    chi = chi2_test(column.frequencies, _reference_count(column), live)
    return None if chi is None else ("chi2", *chi)


def _reference_count(column: FeatureProfile) -> int:
    return max(1, round(column.count * (1.0 - column.null_fraction)))


def ks_test(reference_sample: list[float], live: pd.Series) -> tuple[float, float] | None:
    """Two-sample KS of the live values' finite part against the reference sample."""
    ref = np.asarray(reference_sample, dtype=float)
    ref = ref[np.isfinite(ref)]
    values = pd.to_numeric(live, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    values = values[np.isfinite(values)]
    if len(ref) < 2 or len(values) < 2:
        return None
    result = stats.ks_2samp(values, ref, method="asymp")
    return _finite(result.statistic), _p(result.pvalue)


def chi2_test(
    frequencies: dict[str, float], reference_count: int, live: pd.Series
) -> tuple[float, float] | None:
    """Chi-squared test of live category counts against the reference frequencies.

    Categories the reference never saw land in one extra bucket, which gets a small expected
    share (0.5 / reference_count) so that a new category shows up as drift instead of being
    impossible to score.
    """
    total = sum(v for v in frequencies.values() if v > 0)
    known = {k: v / total for k, v in frequencies.items() if v > 0}
    if len(known) < 2:
        return None
    values = live.dropna().astype(str)
    n = len(values)
    if n < 2:
        return None
    expected, observed = _buckets(known, values.value_counts(), n, 0.5 / reference_count)
    # The reference frequencies are themselves estimated from reference_count rows; dividing by
    # (1 + n / reference_count) turns the goodness-of-fit statistic into the two-sample
    # (homogeneity) one, whose null distribution the p-value below assumes.
    statistic = float(((observed - expected) ** 2 / expected).sum()) / (1.0 + n / reference_count)
    p_value = float(stats.chi2.sf(statistic, df=len(expected) - 1))
    return _finite(statistic), _p(p_value)


def _buckets(
    known: dict[str, float], counts: pd.Series, n: int, other_share: float
) -> tuple[np.ndarray, np.ndarray]:
    """Expected and observed counts per bucket: the reference categories, then the unseen.

    Reference categories expected fewer than MIN_EXPECTED times are pooled, and the pool joins
    the smallest regular category while it is still that small: tiny expected counts make the
    chi-squared approximation cry wolf. The unseen bucket (categories the reference never had)
    stays on its own, tiny on purpose, so a new category is drift.
    """
    scale = 1.0 - other_share
    regular: dict[str, list[float]] = {}
    pool = [0.0, 0.0]
    for category, share in known.items():
        cell = [share * scale * n, float(counts.get(category, 0))]
        if cell[0] >= MIN_EXPECTED:
            regular[category] = cell
        else:
            pool = [pool[0] + cell[0], pool[1] + cell[1]]
    if regular and pool[0] < MIN_EXPECTED:
        smallest = min(regular, key=lambda k: regular[k][0])
        regular[smallest] = [regular[smallest][0] + pool[0], regular[smallest][1] + pool[1]]
    elif pool[0] > 0:
        regular["__rare__"] = pool
    unseen = float(counts[~counts.index.isin(list(known))].sum())
    cells = [*regular.values(), [other_share * n, unseen]]
    expected, observed = np.array(cells, dtype=float).T
    return expected, observed


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else 0.0


def _p(value: float) -> float:
    return float(value) if np.isfinite(value) else 1.0
