"""What GetDriftReport shows besides the tests: reference-vs-live distributions per column,
live performance against the reference, and the episode / cool-down state.

Pure domain logic: histograms and category shares from a profile and a live window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from driftloop.services.monitoring.core.drift import FeatureDrift
from driftloop.services.monitoring.core.regression import (
    ErrorPoint,
    LabelTracker,
    RegressionTracker,
)
from driftloop.shared.profile import TARGET, FeatureProfile, ReferenceProfile

BINS = 20
"""Equal-width bins of a numeric histogram, over the central 99% of reference and live."""
MAX_CATEGORIES = 20
"""Categories shown per column; the rest are pooled as OTHER."""
OTHER = "(other)"


@dataclass(frozen=True)
class ColumnDistribution:
    """One column in the reference and in the live window, as shares per bin or category."""

    column: str
    kind: str
    bin_edges: tuple[float, ...]
    categories: tuple[str, ...]
    reference_shares: tuple[float, ...]
    live_shares: tuple[float, ...]
    reference_count: int
    live_count: int


@dataclass(frozen=True)
class PerformanceSummary:
    """Labels joined so far and the live figures of the latest label window."""

    labelled_rows: int = 0
    unmatched_labels: int = 0
    duplicate_labels: int = 0
    window_rows: int = 0
    live_accuracy: float | None = None
    live_f1_macro: float | None = None
    reference_accuracy: float | None = None
    reference_f1_macro: float | None = None
    reference_source: str = ""
    pending_predictions: int = 0
    invalid_labels: int = 0
    """A regressor's labels that were not finite numbers (ignored)."""
    task: str = "classification"
    live_mae: float | None = None
    live_rmse: float | None = None
    reference_mae: float | None = None
    reference_rmse: float | None = None
    error_over_time: tuple[ErrorPoint, ...] = ()
    """A regressor's live MAE over consecutive labelled rows, oldest first (for the plot
    against reference_mae)."""


@dataclass(frozen=True)
class EpisodeState:
    """The latest episode (open or closed) and how far the cool-down has come."""

    episode_id: str = ""
    opened_at: float | None = None
    open: bool = False
    cooldown_rows_left: int = 0
    reopens_in_s: float = 0.0


@dataclass(frozen=True)
class DriftReport:
    """The latest evaluation of one model, plus the monitor's state, for GetDriftReport."""

    model: str
    version: str
    window_rows: int
    reference_rows: int
    features: tuple[FeatureDrift, ...]
    drift_share: float
    drifted: bool
    open_episode_id: str
    evaluated_at: float | None
    rows_seen: int
    window_start: float | None = None
    window_end: float | None = None
    distributions: tuple[ColumnDistribution, ...] = ()
    performance: PerformanceSummary = field(default_factory=PerformanceSummary)
    episode: EpisodeState = field(default_factory=EpisodeState)
    rows_ignored: int = 0


def distributions(
    columns: Sequence[FeatureProfile],
    window: pd.DataFrame,
    samples: Mapping[str, np.ndarray] | None = None,
) -> tuple[ColumnDistribution, ...]:
    """Reference vs live of every profiled column present in the window (or the label).

    `samples`: numeric reference samples by column, used instead of the profile's own (a
    monitor keeps them as arrays and drops the profile's lists: a fleet holds thousands)."""
    samples = samples or {}
    found = []
    for column in columns:
        live = window[column.name] if column.name in window.columns else pd.Series([], dtype=object)
        sample = samples.get(column.name)
        if column.kind == "numeric" and (column.sample or sample is not None):
            ref = np.asarray(column.sample if sample is None else sample, dtype=float)
            found.append(_numeric(column.name, ref, live))
        elif column.frequencies:
            found.append(_categorical(column, live))
    return tuple(found)


def _numeric(name: str, ref: np.ndarray, live: pd.Series) -> ColumnDistribution:
    ref = ref[np.isfinite(ref)]
    values = pd.to_numeric(live, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    values = values[np.isfinite(values)]
    both = np.concatenate([ref, values])
    if len(both) == 0:
        lo, hi = 0.0, 1.0
    else:
        lo = float(min(np.quantile(ref, 0.005) if len(ref) else np.inf, _q(values, 0.005)))
        hi = float(max(np.quantile(ref, 0.995) if len(ref) else -np.inf, _q(values, 0.995, -1)))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    # why: the span of values near the float limits overflows; clipping both ends keeps the
    # bins' shape (a report of such values is about where they sit, not their last digit)
    lo, hi = max(lo, -LIMIT), min(hi, LIMIT)
    edges = np.linspace(lo, hi, BINS + 1)
    return ColumnDistribution(
        column=name,
        kind="numeric",
        bin_edges=tuple(float(e) for e in edges),
        categories=(),
        reference_shares=_histogram(ref, edges),
        live_shares=_histogram(values, edges),
        reference_count=len(ref),
        live_count=len(values),
    )


LIMIT = np.finfo(float).max / 4
"""Bin edges stay within +-LIMIT, so that hi - lo never overflows."""


def _q(values: np.ndarray, q: float, sign: int = 1) -> float:
    # why inverted_cdf: an observed value, never an interpolation, which overflows between
    # values near the float limits (hypothesis found 1.8e308 and -1e292)
    return float(np.quantile(values, q, method="inverted_cdf")) if len(values) else sign * np.inf


def _histogram(values: np.ndarray, edges: np.ndarray) -> tuple[float, ...]:
    """Shares per bin; values beyond the edges count in the end bins."""
    if len(values) == 0:
        return tuple(0.0 for _ in range(len(edges) - 1))
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return tuple(float(c) / len(values) for c in counts)


def _categorical(column: FeatureProfile, live: pd.Series) -> ColumnDistribution:
    values = live.dropna().astype(str)
    counts = values.value_counts()
    known = sorted(column.frequencies, key=lambda k: -column.frequencies[k])
    unseen = [str(k) for k in counts.index if k not in column.frequencies]
    order = [*known, *unseen]
    shown, pooled = order[:MAX_CATEGORIES], order[MAX_CATEGORIES:]
    total_ref = sum(column.frequencies.values()) or 1.0
    ref = [column.frequencies.get(k, 0.0) / total_ref for k in shown]
    live_total = max(1, len(values))
    live_shares = [float(counts.get(k, 0)) / live_total for k in shown]
    if pooled:
        shown.append(OTHER)
        ref.append(sum(column.frequencies.get(k, 0.0) for k in pooled) / total_ref)
        live_shares.append(sum(float(counts.get(k, 0)) for k in pooled) / live_total)
    if len(values) == 0:
        live_shares = [0.0 for _ in shown]
    return ColumnDistribution(
        column=column.name,
        kind="categorical",
        bin_edges=(),
        categories=tuple(shown),
        reference_shares=tuple(ref),
        live_shares=tuple(live_shares),
        reference_count=max(1, round(column.count * (1.0 - column.null_fraction))),
        live_count=len(values),
    )


def label_column(frequencies: dict[str, float], rows: int) -> FeatureProfile:
    """The reference label frequencies as a categorical column named TARGET."""
    return FeatureProfile(
        name=TARGET, kind="categorical", count=rows, null_fraction=0.0, frequencies=frequencies
    )


def f1_macro(predictions: Sequence[str], labels: Sequence[str]) -> float | None:
    """Macro F1 over the classes seen in labels or predictions (as sklearn, zero_division=0)."""
    if not labels:
        return None
    pred = np.asarray(predictions, dtype=object)
    truth = np.asarray(labels, dtype=object)
    scores = []
    for cls in sorted(set(truth.tolist()) | set(pred.tolist())):
        tp = float(np.sum((pred == cls) & (truth == cls)))
        fp = float(np.sum((pred == cls) & (truth != cls)))
        fn = float(np.sum((pred != cls) & (truth == cls)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def model_distributions(
    profile: ReferenceProfile,
    window: pd.DataFrame,
    performance: LabelTracker,
    samples: Mapping[str, np.ndarray] | None = None,
) -> tuple[ColumnDistribution, ...]:
    """Every feature, the prediction and (once there is a label reference) the label."""
    columns = [*profile.features, *([profile.prediction] if profile.prediction else [])]
    found = distributions(columns, window, samples)
    if isinstance(performance, RegressionTracker):
        return found + _target_distribution(performance)
    ref = performance.reference
    if ref is not None and ref.label_frequencies:
        _, labels = performance.window()
        labelled = pd.DataFrame({TARGET: pd.Series(labels, dtype=object)})
        found += distributions([label_column(ref.label_frequencies, ref.rows)], labelled)
    return found


def _target_distribution(performance: RegressionTracker) -> tuple[ColumnDistribution, ...]:
    """A regressor's label window against the training target's sample (numeric)."""
    sample = performance.target_sample
    if len(sample) == 0:
        return ()
    reference = FeatureProfile(name=TARGET, kind="numeric", count=len(sample), null_fraction=0.0)
    _, labels = performance.window()
    live = pd.DataFrame({TARGET: pd.Series(labels, dtype=float)})
    return distributions([reference], live, {TARGET: sample})


def performance_summary(
    performance: LabelTracker,
    unmatched: int,
    pending: int,
    *,
    duplicate: int = 0,
    invalid: int = 0,
) -> PerformanceSummary:
    if isinstance(performance, RegressionTracker):
        return _regression_summary(performance, unmatched, pending, duplicate, invalid)
    predictions, labels = performance.window()
    ref = performance.reference
    errors = sum(p != y for p, y in zip(predictions, labels, strict=True))
    return PerformanceSummary(
        labelled_rows=performance.labelled_rows,
        unmatched_labels=unmatched,
        duplicate_labels=duplicate,
        window_rows=len(labels),
        live_accuracy=1.0 - errors / len(labels) if labels else None,
        live_f1_macro=f1_macro(predictions, labels),
        reference_accuracy=None
        if ref is None
        else (ref.accuracy if ref.accuracy is not None else 1.0 - ref.error_rate),
        reference_f1_macro=None if ref is None else ref.f1_macro,
        reference_source="" if ref is None else ref.source,
        pending_predictions=pending,
    )


def _regression_summary(
    performance: RegressionTracker, unmatched: int, pending: int, duplicate: int, invalid: int
) -> PerformanceSummary:
    live, ref = performance.live(), performance.reference
    _, labels = performance.window()
    return PerformanceSummary(
        labelled_rows=performance.labelled_rows,
        unmatched_labels=unmatched,
        duplicate_labels=duplicate,
        window_rows=len(labels),
        reference_source="" if ref is None else ref.source,
        pending_predictions=pending,
        invalid_labels=invalid,
        task="regression",
        live_mae=None if live is None else live[0],
        live_rmse=None if live is None else live[1],
        reference_mae=None if ref is None else ref.mae,
        reference_rmse=None if ref is None else ref.rmse,
        error_over_time=tuple(performance.points),
    )
