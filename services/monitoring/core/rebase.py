"""Rebasing a monitor's reference on live data (#17): when the registry's decision for a drift
episode says the champion is as good on post-drift data, the shift was harmless. The champion
keeps serving; its monitor must then compare live rows with what live rows look like now, or the
same shift alarms again after episode_timeout_s and retraining repeats every ten minutes.

Pure domain logic over shared/profile.py. The rebased profile is built from the monitor's live
window (features and predictions) and its latest labelled rows (the label reference): the same
builder training uses. The held-out metrics stay: performance was not hurt (that is what "as
good" means), so the error detectors keep the champion's holdout as their reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from driftloop.shared.profile import (
    PREDICTION,
    TARGET,
    FeatureProfile,
    ReferenceProfile,
    profile_column,
)

CHAMPION_AS_GOOD = "the champion is as good"
"""The registry's words for a conclusive "not better" (services/registry/core/policy.py, the
paired rule): the candidate's improvement's upper bound is below min_improvement. The registry's
ModelRejected event carries only the reason; the monitoring unit tests check this phrase against
the registry's policy, so a change of wording fails a test rather than silently disabling this."""
PSEUDO_COUNT = 0.5
"""Added to every category of the old reference when a categorical column is rebased on a few
hundred live rows: a category the window happened not to hold stays known (pooled with the rare
ones by the chi-squared test) instead of counting as a never-seen category, i.e. drift."""
MAX_SAMPLE = 2000


def settles_as_good(reason: str) -> bool:
    """Whether a ModelRejected reason is the conclusive "the champion is as good"."""
    return CHAMPION_AS_GOOD in reason


def rebased_profile(
    profile: ReferenceProfile,
    window: pd.DataFrame,
    labels: Sequence[object],
) -> ReferenceProfile:
    """`profile` with its feature and prediction references taken from `window` (the live rows)
    and its label reference from `labels` (the latest labelled rows; kept when there are
    none). Categorical columns keep the old reference's categories (PSEUDO_COUNT)."""
    columns = [*profile.features, *([profile.prediction] if profile.prediction else [])]
    rebuilt = {c.name: _rebase(c, window) for c in columns if c.name in window.columns}
    target = profile.target
    if labels and target is not None:
        values = pd.Series(list(labels))
        if profile.task == "regression":
            values = pd.to_numeric(values, errors="coerce")
        target = _rebase(
            target,
            pd.DataFrame({TARGET: values.astype(object)}),
            numeric=profile.task == "regression",
        )
    return profile.model_copy(
        update={
            "rows": len(window),
            "features": [rebuilt.get(f.name, f) for f in profile.features],
            "prediction": rebuilt.get(PREDICTION, profile.prediction),
            "target": target,
        }
    )


def restore_samples(
    slim: ReferenceProfile,
    samples: Mapping[str, np.ndarray],
    target_sample: np.ndarray | None,
) -> ReferenceProfile:
    """A monitor's slimmed profile (drift.PreparedReference.slim) with the numeric samples it
    holds elsewhere put back: the PreparedReference's, and a regressor's target sample."""

    def put(column: FeatureProfile | None, sample: np.ndarray | None) -> FeatureProfile | None:
        if column is None or sample is None or column.sample:
            return column
        return column.model_copy(update={"sample": [float(v) for v in sample]})

    return slim.model_copy(
        update={
            "features": [put(f, samples.get(f.name)) for f in slim.features],
            "prediction": put(slim.prediction, samples.get(PREDICTION)),
            "target": put(slim.target, target_sample),
        }
    )


def _rebase(
    old: FeatureProfile, window: pd.DataFrame, *, numeric: bool | None = None
) -> FeatureProfile:
    values = window[old.name]
    if old.kind == "numeric" and (numeric is None or numeric):
        values = pd.to_numeric(values, errors="coerce")
        return profile_column(old.name, values, max_sample=MAX_SAMPLE, seed=0)
    counts = values.dropna().astype(str).value_counts()
    merged = {str(k): float(v) for k, v in counts.items()}
    for category in old.frequencies:
        merged[category] = merged.get(category, 0.0) + PSEUDO_COUNT
    total = sum(merged.values()) or 1.0
    present = int(values.notna().sum())
    return old.model_copy(
        update={
            "count": len(values),
            "null_fraction": float(1.0 - present / len(values)) if len(values) else 0.0,
            "frequencies": {k: v / total for k, v in merged.items()},
            "sample": [],
            "quantiles": {},
        }
    )


def change_since(
    change_rows: int, joined_at: Sequence[float], after_alarm: int, alarm_ts: float, shrink: float
) -> float:
    """When the rows a retrain should learn from began (ModelMonitor: see CHANGE_SHRINK): with
    the detector's estimate of the rows since the change point, the time the label of the first
    labelled row after it was joined (a labelled training row is ingested when its label is
    known), shrunk towards the alarm so that rows from before the change stay out; else the
    alarm row's time."""
    if not change_rows:
        return alarm_ts
    back = max(1, int(change_rows * shrink))
    # `after_alarm` rows joined after the alarm row; the first row after the change is
    # `back - 1` rows before it
    index = len(joined_at) - 1 - after_alarm - (back - 1)
    return float(joined_at[max(0, index)])
