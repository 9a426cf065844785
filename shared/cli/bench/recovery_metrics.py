"""The arithmetic of `driftloop bench recovery`: the reference ladder, the recovery point, the rows
the reference needed, and the judgement of each production change on later live labels. No IO.

Rows are the live rows of one stream in the order they were sent; "served accuracy" on rows R is
the share of R whose answer from serving equals the label (a failed request counts as wrong).

- reference(k): the spec's pipeline fit on the first k rows of an independent draw of the
  post-drift regime (the stream's `after` pool: up to DRAWS disjoint blocks, averaged), so that it
  can be scored on the very rows the loop answered. The recovery target is reference(k_spec),
  k_spec = the rows the spec trains on (window_rows less its holdout).
- candidates: the first row answered by each version change at or after the drift's first row.
- recovery row r: the first candidate with at least MIN_AFTER_ROWS rows after it where served
  accuracy on [r, end) >= reference(k_spec) accuracy on [r, end) - TOLERANCE. Rows to recovery
  = r - drift_at (at least 0), seconds likewise between the two rows' answers. An episode that
  never recovers counts as infinitely slow in the medians (null when the median is infinite).
- rows the reference needed: the smallest ladder k with reference(k) accuracy on [r, end) >=
  the served accuracy on [r, end), that accuracy capped at the target's (a loop that matches
  the target by luck would otherwise be set against the rows the reference needs to beat it,
  on a plateau where noise decides); the ratio is rows to recovery / that k. Labels reach the
  loop `label_delay` rows late while the reference is charged no delay, so the delay counts
  against the loop.
- a production change A -> B (seen in the answers) is judged on the rows B answered until the
  next change: B is worse when it answered at least MIN_JUDGED_ROWS of them and an exact
  one-sided McNemar test (B wrong where A, scored offline on the same rows, was right, against
  the reverse) gives p < WORSE_ALPHA.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

TARGET = "label"
TOLERANCE = 0.01
MIN_AFTER_ROWS = 300
MIN_JUDGED_ROWS = 100
WORSE_ALPHA = 0.05
DRAWS = 3
LADDER = (50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000)


def model_spec(features: Sequence[str], spec: Any = None) -> Any:
    """Training's ModelSpec with the fields the reference needs from a registry spec (or the
    defaults training fills in when `spec` is None)."""
    from driftloop.services.training.core.domain import ModelSpec

    default = ModelSpec()
    if spec is None:
        return ModelSpec(features=tuple(features))
    return ModelSpec(
        features=tuple(features),
        estimator=spec.estimator or default.estimator,
        params=dict(spec.params),
        window_rows=spec.window_rows or default.window_rows,
        holdout_fraction=spec.holdout_fraction or default.holdout_fraction,
    )


def training_rows(spec: Any, available: int | None = None) -> int:
    """Rows training fits on from a window of `available` rows (default: a full window)."""
    window = spec.window_rows if available is None else min(available, spec.window_rows)
    return window - max(1, math.ceil(window * spec.holdout_fraction))


def fit_reference(frame: pd.DataFrame, features: list[str], spec: Any) -> Any:
    """The pipeline training would fit on `frame` with `spec` (same preprocessing and seed)."""
    from driftloop.services.training.core import trainer

    pipeline = trainer.build_pipeline(frame, features, spec)
    trainer.seed_everything()
    return pipeline.fit(frame[features], frame[TARGET].astype(str))


@dataclass(frozen=True)
class Ladder:
    """Per ladder size k, which live rows each reference draw got right ([draws, rows])."""

    correct: dict[int, np.ndarray]
    target_rows: int
    """k_spec: the size whose accuracy is the recovery target."""

    def accuracy(self, k: int, rows: slice) -> float:
        return float(self.correct[k][:, rows].mean())

    def target(self, rows: slice) -> float:
        return self.accuracy(self.target_rows, rows)

    def rows_needed(self, rows: slice, accuracy: float) -> int:
        """The smallest k whose reference reaches `accuracy` on `rows`, capped at the target's."""
        wanted = min(accuracy, self.target(rows))
        return min(k for k in self.correct if self.accuracy(k, rows) >= wanted)


def build_ladder(
    pool: pd.DataFrame, live: pd.DataFrame, features: list[str], spec: Any, sizes: Sequence[int]
) -> Ladder:
    target = training_rows(spec)
    correct: dict[int, np.ndarray] = {}
    truth = live[TARGET].to_numpy()
    for k in sorted({*(s for s in sizes if s <= len(pool)), min(target, len(pool))}):
        draws = []
        for d in range(max(1, min(DRAWS, len(pool) // k))):
            block = pool.iloc[d * k : (d + 1) * k]
            if block[TARGET].nunique() < 2:
                continue  # a block of one class cannot be fit: the other draws speak for k
            model = fit_reference(block, features, spec)
            draws.append(np.asarray(model.predict(live[features])).astype(str) == truth)
        if draws:
            correct[k] = np.array(draws)
    return Ladder(correct, min(target, len(pool)))


@dataclass(frozen=True)
class Switch:
    row: int
    """First live row the version answered."""
    version: str
    previous: str
    end: int
    """First row of the next switch (or the end of the stream)."""


def switches(versions: Sequence[str], start: int = 0) -> list[Switch]:
    """Every change of the answering version at or after row `start` (failed rows skipped)."""
    found: list[tuple[int, str, str]] = []
    current = ""
    for row, version in enumerate(versions):
        if not version:
            continue
        if current and version != current and row >= start:
            found.append((row, version, current))
        current = version
    ends = [row for row, _, _ in found[1:]] + [len(versions)] * bool(found)
    return [Switch(r, v, p, e) for (r, v, p), e in zip(found, ends, strict=True)]


def recovery_row(
    correct: np.ndarray, ladder: Ladder, candidates: Sequence[int], min_after: int = MIN_AFTER_ROWS
) -> int | None:
    for row in candidates:
        after = slice(row, len(correct))
        if len(correct) - row < min_after:
            break
        if correct[after].mean() >= ladder.target(after) - TOLERANCE:
            return row
    return None


@dataclass(frozen=True)
class Judgement:
    version: str
    previous: str
    row: int
    rows: int
    accuracy: float | None
    previous_accuracy: float | None
    """A's accuracy on the same rows (None: not judged)."""
    p_value: float | None
    worse: bool


def judge(switch: Switch, new_correct: np.ndarray, old_correct: np.ndarray | None) -> Judgement:
    """B (answering) against A (scored offline) on the rows B answered: see the module doc."""
    rows = len(new_correct)
    if old_correct is None or rows < MIN_JUDGED_ROWS:
        acc = round(float(new_correct.mean()), 4) if rows else None
        return Judgement(switch.version, switch.previous, switch.row, rows, acc, None, None, False)
    from scipy.stats import binomtest

    lost = int((~new_correct & old_correct).sum())
    gained = int((new_correct & ~old_correct).sum())
    p = binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue if lost + gained else 1.0
    return Judgement(
        switch.version,
        switch.previous,
        switch.row,
        rows,
        round(float(new_correct.mean()), 4),
        round(float(old_correct.mean()), 4),
        float(p),
        bool(lost > gained and p < WORSE_ALPHA),
    )


def rows_at(times: np.ndarray, at: float) -> int:
    """How many rows had been answered by wall time `at` (answer times are non-decreasing)."""
    return int(np.searchsorted(times, at, side="right"))


def share(correct: np.ndarray, rows: slice) -> float | None:
    part = correct[rows]
    return round(float(part.mean()), 4) if len(part) else None


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Median where None (an episode that never got there) counts as infinitely large."""
    if not values:
        return None
    ordered = sorted(math.inf if v is None else v for v in values)
    middle = statistics.median(ordered)
    return None if math.isinf(middle) else round(middle, 3)
