"""Paired comparison of two models scored on the same rows: the difference of a metric with a
confidence interval and a p-value, and the rows such a comparison needs to see a given difference.

Candidate and champion predict the same rows, so their errors are correlated; comparing two
accuracies as if independent wastes most of the evidence. Here every row is a pair:

- accuracy: each row is "both right", "both wrong", "only the candidate right" (n01) or "only the
  champion right" (n10). McNemar's exact test gives the one-sided p-value that the candidate is
  no better (a binomial test on the discordant rows); the interval is a bootstrap of the paired
  differences, drawn as multinomial counts of the three outcomes (exact for a mean of -1/0/+1
  values, and cheap at any row count);
- any other metric (macro F1; MAE, RMSE, R² and MAPE of regressors): a paired bootstrap that
  resamples rows and scores both models on each resample; the p-value is the share of resamples
  where the candidate is not better.

The difference is always "how much better the candidate is" in the policy's unit
(driftloop.shared.estimators.Metric.improvement): a plain difference for scores in [0, 1], the
relative error reduction for error metrics (MAE 9.0 against the champion's 10.0 is +0.10).

The interval is central at level 2*confidence-1, so `lower` is a one-sided lower bound at level
`confidence`: the policy promotes when `lower >= margin`, and calls a candidate "not better by
delta" when `upper < delta`.

Pure numpy/scipy: training computes it, the registry decides on it, monitoring uses it on live
labels after a promotion.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from driftloop.shared.errors import InvalidInput

RESAMPLES = 2000
SEED = 0
DEFAULT_CONFIDENCE = 0.95
ASSUMED_DISCORDANCE = 0.15
"""Share of rows on which two models disagree about being right, assumed before any candidate
has been scored (the first wait after a drift); later waits use the share observed."""
ASSUMED_SPREAD = 0.8
"""Regression's counterpart: the standard deviation of one row's share of the relative error
reduction (|champion error| - |candidate error|, over the champion's mean absolute error),
assumed before any candidate has been scored. Absolute errors spread about as widely as their
mean, and two models' errors are correlated, hence a little below 1."""
REGRESSION_METRICS = ("mae", "rmse", "r2", "mape")
STAND_IN_ERROR = 1e12
"""How wrong a regression champion counts on a row it cannot score (NaN: a feature it needs is
gone), relative to the target; training's champion metrics use the same stand-in."""
CHUNK = 100
"""Bootstrap resamples drawn at once (memory: CHUNK x rows indices)."""


@dataclass(frozen=True)
class PairedComparison:
    """`candidate - champion` on the policy metric, over the same `rows`."""

    metric: str
    rows: int
    candidate: float
    champion: float
    difference: float
    lower: float
    upper: float
    p_value: float
    """One-sided: the chance of a difference at least this large if the candidate were no
    better than the champion."""
    confidence: float
    method: str
    """"mcnemar-exact" (accuracy) or "paired-bootstrap"."""
    discordance: float
    """Share of rows where exactly one of the two models is right (accuracy; for other metrics,
    where their predictions differ): what the rows needed to see a difference depend on."""
    spread: float = 0.0
    """Regression: the standard deviation of one row's share of the relative error reduction
    (rows_needed's `spread`); 0 for classification."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PairedComparison:
        try:
            return cls(
                metric=str(raw["metric"]),
                rows=int(raw["rows"]),
                candidate=float(raw["candidate"]),
                champion=float(raw["champion"]),
                difference=float(raw["difference"]),
                lower=float(raw["lower"]),
                upper=float(raw["upper"]),
                p_value=float(raw["p_value"]),
                confidence=float(raw["confidence"]),
                method=str(raw["method"]),
                discordance=float(raw["discordance"]),
                spread=float(raw.get("spread", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"paired comparison is not readable: {exc}") from exc

    def summary(self) -> str:
        """One line for reasons and traces."""
        level = round(100 * (2 * self.confidence - 1))
        return (
            f"{self.metric} {self.candidate:.3f} vs champion {self.champion:.3f} on the same "
            f"{self.rows} rows: difference {self.difference:+.3f}, {level}% interval "
            f"[{self.lower:+.3f}, {self.upper:+.3f}], p={self.p_value:.3g} ({self.method})"
        )


def compare(
    truth: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    metric: str = "accuracy",
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> PairedComparison:
    """Compare two models' predictions of the same rows (labels compared as strings; numbers
    for the regression metrics)."""
    if not 0.5 < confidence < 1:
        raise InvalidInput(f"confidence must lie in (0.5, 1), got {confidence}")
    if metric in REGRESSION_METRICS:
        return _regression(truth, candidate, champion, metric, confidence, resamples, seed)
    y, a, b = (np.asarray(v).astype(str) for v in (truth, candidate, champion))
    if not len(y) == len(a) == len(b) or len(y) == 0:
        raise InvalidInput(
            f"paired comparison needs the same non-zero number of rows, got {len(y)}, "
            f"{len(a)} and {len(b)}"
        )
    rng = np.random.default_rng(seed)
    if metric == "accuracy":
        return _accuracy(y == a, y == b, confidence, resamples, rng)
    if metric == "f1_macro":
        return _bootstrap(y, a, b, metric, confidence, resamples, rng)
    raise InvalidInput(
        f"no paired comparison for metric {metric!r}: use accuracy, f1_macro, "
        + ", ".join(REGRESSION_METRICS)
    )


def stand_in(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """`predicted` with every row it could not score (not finite) replaced by a prediction
    STAND_IN_ERROR wrong."""
    return np.where(np.isfinite(predicted), predicted, truth + STAND_IN_ERROR * (1 + np.abs(truth)))


def _regression(
    truth: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    metric: str,
    confidence: float,
    resamples: int,
    seed: int,
) -> PairedComparison:
    from driftloop.shared.estimators import METRICS

    try:
        y, a, b = (np.asarray(v, dtype=float) for v in (truth, candidate, champion))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a regression comparison needs numbers: {exc}") from exc
    if not len(y) == len(a) == len(b) or len(y) == 0:
        raise InvalidInput(
            f"paired comparison needs the same non-zero number of rows, got {len(y)}, "
            f"{len(a)} and {len(b)}"
        )
    # why: a champion that cannot score a row (a feature gone) is infinitely wrong on it; a
    # huge finite error keeps the arithmetic finite and the candidate clearly better there
    b = stand_in(y, b)
    found = METRICS[metric]
    cand, champ = found.compute(y, a), found.compute(y, b)
    if np.isnan(cand) or np.isnan(champ):
        raise InvalidInput(f"{metric} is undefined on these rows (MAPE needs a non-zero target)")
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        picks = rng.integers(0, n, (min(CHUNK, resamples - start), n))
        for i, pick in enumerate(picks):
            diffs[start + i] = found.improvement(
                found.compute(y[pick], a[pick]), found.compute(y[pick], b[pick])
            )
    diffs = np.nan_to_num(diffs, nan=0.0, neginf=-STAND_IN_ERROR, posinf=STAND_IN_ERROR)
    lower, upper = _bounds(diffs, confidence)
    err_a, err_b = np.abs(y - a), np.abs(y - b)
    scale = float(err_b.mean()) or 1.0
    return PairedComparison(
        metric=metric,
        rows=n,
        candidate=cand,
        champion=champ,
        difference=found.improvement(cand, champ),
        lower=lower,
        upper=upper,
        p_value=float(np.mean(diffs <= 0)),
        confidence=confidence,
        method="paired-bootstrap",
        discordance=float(np.mean(~np.isclose(a, b))),
        spread=float(np.std((err_b - err_a) / scale)),
    )


def _accuracy(
    right_a: np.ndarray,
    right_b: np.ndarray,
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
) -> PairedComparison:
    return from_counts(
        int(np.sum(right_a & ~right_b)),
        int(np.sum(~right_a & right_b)),
        len(right_a),
        candidate=float(right_a.mean()),
        confidence=confidence,
        resamples=resamples,
        rng=rng,
    )


def from_counts(
    n01: int,
    n10: int,
    rows: int,
    *,
    candidate: float,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = RESAMPLES,
    rng: np.random.Generator | None = None,
) -> PairedComparison:
    """The accuracy comparison from its paired counts: `n01` rows only the candidate got right,
    `n10` only the champion, of `rows`, the candidate's accuracy being `candidate` (what live
    evidence reports, without the rows themselves)."""
    if min(n01, n10) < 0 or n01 + n10 > rows or rows <= 0:
        raise InvalidInput(
            f"paired counts must be non-negative and fit in the rows: {n01} + {n10} of {rows}"
        )
    rng = rng or np.random.default_rng(SEED)
    discordant = n01 + n10
    p_value = (
        float(stats.binomtest(n01, discordant, 0.5, alternative="greater").pvalue)
        if discordant
        else 1.0
    )
    draws = rng.multinomial(rows, [n01 / rows, n10 / rows, 1 - discordant / rows], size=resamples)
    diffs = (draws[:, 0] - draws[:, 1]) / rows
    lower, upper = _bounds(diffs, confidence)
    difference = (n01 - n10) / rows
    return PairedComparison(
        metric="accuracy",
        rows=rows,
        candidate=candidate,
        champion=candidate - difference,
        difference=difference,
        lower=lower,
        upper=upper,
        p_value=p_value,
        confidence=confidence,
        method="mcnemar-exact",
        discordance=discordant / rows,
    )


def _bootstrap(
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    metric: str,
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
) -> PairedComparison:
    labels, codes = np.unique(np.concatenate([y, a, b]), return_inverse=True)
    n, k = len(y), len(labels)
    yc, ac, bc = codes[:n], codes[n : 2 * n], codes[2 * n :]
    diffs = np.empty(resamples)
    for i in range(resamples):
        pick = rng.integers(0, n, n)
        diffs[i] = _f1_macro(yc[pick], ac[pick], k) - _f1_macro(yc[pick], bc[pick], k)
    cand, champ = _f1_macro(yc, ac, k), _f1_macro(yc, bc, k)
    lower, upper = _bounds(diffs, confidence)
    return PairedComparison(
        metric=metric,
        rows=n,
        candidate=cand,
        champion=champ,
        difference=cand - champ,
        lower=lower,
        upper=upper,
        p_value=float(np.mean(diffs <= 0)),
        confidence=confidence,
        method="paired-bootstrap",
        discordance=float(np.mean(ac != bc)),
    )


def _f1_macro(truth: np.ndarray, predicted: np.ndarray, k: int) -> float:
    """Macro F1 over the classes present in truth or predictions (scikit-learn's default)."""
    tp = np.bincount(truth[truth == predicted], minlength=k).astype(float)
    true_counts = np.bincount(truth, minlength=k)
    predicted_counts = np.bincount(predicted, minlength=k)
    present = (true_counts + predicted_counts) > 0
    denominator = true_counts + predicted_counts
    f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def _bounds(diffs: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.quantile(diffs, [1 - confidence, confidence])
    return float(low), float(high)


def rows_needed(
    delta: float,
    margin: float = 0.0,
    *,
    discordance: float = ASSUMED_DISCORDANCE,
    confidence: float = DEFAULT_CONFIDENCE,
    power: float = 0.8,
    spread: float | None = None,
) -> int:
    """Rows a paired comparison needs so that a true improvement of `delta` shows as a lower
    bound at or above `margin` with probability `power` (Connor's sample size for McNemar's
    test, on the paired differences' variance discordance - delta^2). With `spread`
    (regression: the per-row standard deviation of the relative error reduction), the normal
    sample size for a mean difference instead."""
    if delta <= margin:
        raise InvalidInput(f"the improvement to detect ({delta}) must exceed the margin ({margin})")
    z_a = stats.norm.ppf(confidence)
    z_b = stats.norm.ppf(power)
    if spread is not None:
        return max(2, math.ceil(((z_a + z_b) * spread / (delta - margin)) ** 2))
    p = min(1.0, max(discordance, delta))
    spread = z_a * math.sqrt(p) + z_b * math.sqrt(max(p - delta * delta, 1e-12))
    return math.ceil((spread / (delta - margin)) ** 2)
