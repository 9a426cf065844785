"""Streams and the Evidently baseline of `driftloop bench drift`: seeded numpy generators of
labelled rows with one known drift each, and Evidently's default drift tests with scipy.

Rows: 20 numeric features (normal and log-normal, various scales), 4 categorical ones, and a
binary label from a noisy linear concept; the fixed model is the pre-drift Bayes rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.spatial import distance

from driftloop.shared.cli.bench.replay import LabelledStream
from driftloop.shared.profile import PREDICTION

if TYPE_CHECKING:
    from driftloop.services.monitoring.core.drift import DriftPolicy
    from driftloop.shared.cli.bench.drift import Plan

NUMERIC = 20
MEANS = np.linspace(-5.0, 40.0, NUMERIC)
SCALES = np.geomspace(0.1, 50.0, NUMERIC)
LOGNORMAL = np.arange(NUMERIC) % 4 == 3
CATEGORIES: dict[str, dict[str, float]] = {
    "plan": {"basic": 0.5, "pro": 0.3, "team": 0.2},
    "region": {"eu": 0.4, "us": 0.3, "apac": 0.2, "latam": 0.1},
    "device": {"web": 0.35, "ios": 0.25, "android": 0.25, "tv": 0.1, "car": 0.05},
    "promo": {"no": 0.7, "yes": 0.3},
}
CHANGED: dict[str, dict[str, float]] = {
    "plan": {"basic": 0.3, "pro": 0.3, "team": 0.4},
    "region": {"eu": 0.2, "us": 0.3, "apac": 0.3, "latam": 0.2},
    "device": {"web": 0.2, "ios": 0.25, "android": 0.25, "tv": 0.2, "car": 0.1},
    "promo": {"no": 0.5, "yes": 0.5},
}
WEIGHTS = np.array([1.0, 0.8, 0.6, 0.4, 0.3, 0.2])
"""The concept: label = 1 when WEIGHTS . (standardised first six features) + noise > 0."""
NOISE = 0.5
CONCEPT_FLIPS = ([4], [3], [2], [1])
"""Concept drifts flip the sign of these weights: error rate 0.10 -> about 0.16 .. 0.36."""
SHIFTS = (0.75, 1.0, 1.5)
"""Mean shifts, in standard deviations, of the abrupt covariate drifts."""
REFERENCE_ROWS = 5000
RAMP_ROWS = 1000


def streams(plan: Plan, seed: int) -> Iterator[LabelledStream]:
    """Every stream of the plan, deterministic for a seed; drift trials first."""
    rng = np.random.default_rng(seed)
    for kind, trials in plan.trials.items():
        for trial in range(trials):
            yield _trial(kind, trial, plan, np.random.default_rng(rng.integers(2**63)))
    for index in range(plan.stationary_streams):
        r = np.random.default_rng(rng.integers(2**63))
        yield _stream(f"stationary-{index}", "stationary", r, plan.stationary_rows, None)


def _trial(kind: str, trial: int, plan: Plan, rng: np.random.Generator) -> LabelledStream:
    n, start = plan.pre_rows + plan.post_rows, plan.pre_rows
    shift = np.zeros((n, NUMERIC))
    cats = {name: np.zeros(n, dtype=bool) for name in CATEGORIES}
    weights = np.tile(WEIGHTS, (n, 1))
    drift_at = start
    if kind in ("abrupt", "gradual"):
        features = rng.choice(NUMERIC, 2, replace=False)
        size = SHIFTS[trial % len(SHIFTS)] if kind == "abrupt" else 1.5
        ramp = np.clip((np.arange(n) - start + 1) / (RAMP_ROWS if kind == "gradual" else 1), 0, 1)
        shift[:, features] = ramp[:, None] * size
        drift_at = start + (RAMP_ROWS // 2 if kind == "gradual" else 0)
    elif kind == "categorical":
        cats[list(CATEGORIES)[trial % len(CATEGORIES)]][start:] = True
    else:
        weights[start:, CONCEPT_FLIPS[trial % len(CONCEPT_FLIPS)]] *= -1
    drift = (shift, cats, weights)
    return _stream(f"{kind}-{trial}", kind, rng, n, drift, start, drift_at)


def _stream(
    name: str,
    kind: str,
    rng: np.random.Generator,
    n: int,
    drift: tuple[np.ndarray, dict[str, np.ndarray], np.ndarray] | None,
    start: int | None = None,
    drift_at: int | None = None,
) -> LabelledStream:
    reference, ref_predictions, ref_labels = _rows(rng, REFERENCE_ROWS, None)
    live, predictions, labels = _rows(rng, n, drift)
    return LabelledStream(
        name=name,
        kind=kind,
        reference=reference,
        reference_predictions=ref_predictions,
        live=live.assign(**{PREDICTION: predictions}),
        labels=labels,
        reference_labels=ref_labels,
        drift_start=start,
        drift_at=drift_at,
    )


def _rows(
    rng: np.random.Generator,
    n: int,
    drift: tuple[np.ndarray, dict[str, np.ndarray], np.ndarray] | None,
) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """Features, the fixed model's predictions and the labels of n rows."""
    z = rng.standard_normal((n, NUMERIC))
    weights = np.tile(WEIGHTS, (n, 1))
    if drift is not None:
        z = z + drift[0]
        weights = drift[2]
    raw = np.where(LOGNORMAL, np.exp(0.5 * z), z) * SCALES + MEANS
    frame = pd.DataFrame(raw, columns=[f"x{i:02d}" for i in range(NUMERIC)])
    for name, freqs in CATEGORIES.items():
        values = rng.choice(list(freqs), n, p=list(freqs.values()))
        if drift is not None and drift[1][name].any():
            moved = drift[1][name]
            changed = CHANGED[name]
            values[moved] = rng.choice(list(changed), int(moved.sum()), p=list(changed.values()))
        frame[name] = values
    # The model knows the pre-drift concept on the standardised inputs it was trained on.
    predictions = (z[:, :6] @ WEIGHTS > 0).astype(int).astype(str)
    truth = np.einsum("ij,ij->i", z[:, :6], weights) + rng.normal(0, NOISE, n) > 0
    return frame, pd.Series(predictions), truth.astype(int).astype(str)


# Evidently's default column tests, as documented and implemented in evidently 0.7
# (evidently/legacy/calculations/stattests/registry.py `_get_default_stattest`, and the release
# notes of 0.1.50 "Automatic Stattest Selection"): with more than 1000 reference rows, numeric
# columns with more than 5 values use the Wasserstein distance normed by the reference std
# (wasserstein_distance_norm.py: drift when >= 0.1), categorical ones the Jensen-Shannon
# distance of the category shares (jensenshannon.py, scipy.spatial.distance.jensenshannon,
# natural log: drift when >= 0.1); with <= 1000 rows K-S p < 0.05 and chi-squared p < 0.05.
# Dataset drift: share of drifted columns >= 0.5 (DataDriftPreset / DataDriftOptions
# drift_share=0.5). Our reference has 5000 rows, so the distance tests apply.
EVIDENTLY_THRESHOLD = 0.1
EVIDENTLY_DRIFT_SHARE = 0.5


def evidently_alarms(stream: LabelledStream, policy: DriftPolicy) -> tuple[list[int], list[int]]:
    """Alarm rows of Evidently's dataset drift and of "any column drifted", on the monitor's
    windows (last window_rows rows, every eval_every rows after min_rows). After an alarm the
    next one needs a whole new window (as after our redeploy); the stream ends once both have
    alarmed at or after the drift start."""
    numeric = [c for c in stream.reference.columns if c.startswith("x")]
    categorical = [*CATEGORIES, PREDICTION]
    reference = stream.reference.assign(**{PREDICTION: stream.reference_predictions.to_numpy()})
    ref_sorted = np.sort(reference[numeric].to_numpy(dtype=float), axis=0)
    ref_std = np.maximum(reference[numeric].to_numpy(dtype=float).std(axis=0), 0.001)
    live_num = stream.live[numeric].to_numpy(dtype=float)
    codes, ref_shares, sizes = _categorical_codes(reference, stream.live, categorical)
    dataset: list[int] = []
    any_column: list[int] = []
    last = [-policy.window_rows, -policy.window_rows]
    for end in range(policy.min_rows, len(stream.live) + 1, policy.eval_every):
        begin = max(0, end - policy.window_rows)
        wd = _wasserstein_normed(ref_sorted, np.sort(live_num[begin:end], axis=0)) / ref_std
        js = [
            distance.jensenshannon(ref_shares[i], np.bincount(codes[i][begin:end], minlength=k))
            for i, k in enumerate(sizes)
        ]
        drifted = int((wd >= EVIDENTLY_THRESHOLD).sum()) + sum(d >= EVIDENTLY_THRESHOLD for d in js)
        flags = (drifted / (len(numeric) + len(categorical)) >= EVIDENTLY_DRIFT_SHARE, drifted > 0)
        for i, (alarms, flag) in enumerate(zip((dataset, any_column), flags, strict=True)):
            if flag and end - last[i] >= policy.window_rows:
                alarms.append(end - 1)
                last[i] = end
        if stream.drift_start is not None and _both_done(dataset, any_column, stream.drift_start):
            break
    return dataset, any_column


def _both_done(dataset: list[int], any_column: list[int], start: int) -> bool:
    return bool(dataset and dataset[-1] >= start and any_column and any_column[-1] >= start)


def _categorical_codes(
    reference: pd.DataFrame, live: pd.DataFrame, columns: list[str]
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Live category codes and reference shares per column, over the union of categories."""
    codes, shares, sizes = [], [], []
    for column in columns:
        keys = sorted(set(reference[column].astype(str)) | set(live[column].astype(str)))
        index = {k: i for i, k in enumerate(keys)}
        ref = reference[column].astype(str).map(index).to_numpy()
        codes.append(live[column].astype(str).map(index).to_numpy())
        shares.append(np.bincount(ref, minlength=len(keys)) / len(ref))
        sizes.append(len(keys))
    return codes, shares, sizes


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _wasserstein_normed(ref_sorted: np.ndarray, live_sorted: np.ndarray) -> np.ndarray:
    """Per column, the W1 distance of two empirical distributions (= scipy's
    wasserstein_distance), via their quantile functions on the merged grid of breakpoints."""
    m, n = len(ref_sorted), len(live_sorted)
    if (m, n) not in _GRIDS:
        breaks = np.union1d(np.arange(1, m + 1) / m, np.arange(1, n + 1) / n)
        widths = np.diff(np.r_[0.0, breaks])
        mids = breaks - widths / 2
        ri = np.minimum((mids * m).astype(int), m - 1)
        li = np.minimum((mids * n).astype(int), n - 1)
        _GRIDS[(m, n)] = (ri, li, widths)
    ri, li, widths = _GRIDS[(m, n)]
    return np.abs(ref_sorted[ri] - live_sorted[li]).T @ widths
