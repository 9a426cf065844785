"""What a spec's task changes in training: the target's type (class labels as strings, or
numbers), how predictions are read, and how the rows are split into folds.

Classification compares labels as strings and stratifies folds by class; regression reads the
target as a finite number (rows whose target does not parse are left out and counted) and
splits folds by position only. Both keep folds unshuffled: each fold is a stretch of time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import structlog
from sklearn.base import is_regressor
from sklearn.model_selection import KFold, StratifiedKFold

from driftloop.shared import paired
from driftloop.shared.errors import InvalidInput
from driftloop.shared.estimators import REGRESSION, task_of
from driftloop.shared.names import shown

log = structlog.get_logger(__name__)

UNSCORABLE = "\x00<the champion cannot score these rows>"
"""A classification champion's "prediction" for rows lacking a feature it needs: never equal
to a label. A regression champion's is NaN (driftloop.shared.paired counts it as lost)."""
EXAMPLES = 3
"""Values that do not parse shown in a message."""


def is_regression(task: str) -> bool:
    return task_of(task) == REGRESSION


@dataclass(frozen=True)
class NumericTarget:
    """A frame's rows whose target parses as a finite number (the target as float), and the
    rows that had a target which does not parse."""

    rows: pd.DataFrame
    left_out: int
    examples: tuple[str, ...]
    """Up to EXAMPLES distinct values that did not parse, shown safely."""

    def note(self, target: str) -> str:
        """One line for the log and the run: how many rows were left out and why."""
        return (
            f"{self.left_out} rows left out: target {target!r} does not parse as a finite "
            f"number (e.g. {', '.join(self.examples)})"
        )


def numeric_target(frame: pd.DataFrame, target: str) -> NumericTarget:
    """`frame` with its target read as numbers (pd.to_numeric; text such as " 3.5" or "1e3"
    parses); rows whose target is missing stay out uncounted, rows whose target is text that
    is no number, or infinite, are left out and counted."""
    raw = frame[target]
    numbers = pd.to_numeric(raw, errors="coerce").astype(float)
    ok = np.isfinite(numbers.to_numpy())
    bad = raw.notna().to_numpy() & ~ok
    kept = frame.loc[ok].copy()
    kept[target] = numbers[ok]
    examples = tuple(shown(str(v)) for v in pd.unique(raw[bad].astype(str))[:EXAMPLES])
    return NumericTarget(kept, int(bad.sum()), examples)


def numeric_window(window: pd.DataFrame, target: str, min_rows: int) -> tuple[pd.DataFrame, int]:
    """The window's rows whose target parses as a number, and how many did not (logged);
    InvalidInput when none, or fewer than `min_rows`, remain."""
    parsed = numeric_target(window, target)
    if parsed.left_out:
        log.warning("target_rows_left_out", rows=parsed.left_out, examples=list(parsed.examples))
    kept = len(parsed.rows)
    if kept == 0 or kept < min_rows:
        because = f"; {parsed.note(target)}" if parsed.left_out else ""
        raise InvalidInput(
            f"{kept} rows have a numeric target {target!r}; a regression needs at least "
            f"{max(min_rows, 1)} (spec.min_rows){because}"
        )
    return parsed.rows, parsed.left_out


def check_predictions(predicted: np.ndarray, task: str) -> None:
    """InvalidInput when a regressor predicted NaN or infinity: no metric could score it."""
    if is_regression(task) and not np.isfinite(predicted).all():
        bad = int((~np.isfinite(predicted)).sum())
        raise InvalidInput(
            f"the fitted regressor predicted {bad} non-finite values of {len(predicted)}: "
            "choose other estimator parameters"
        )


def truth(values: pd.Series, task: str) -> np.ndarray:
    """The target as the task's metrics compare it: strings, or floats."""
    if is_regression(task):
        return values.to_numpy(dtype=float)
    return values.astype(str).to_numpy()


def target(values: pd.Series, task: str) -> pd.Series:
    """The target as estimators are fitted on it: strings, or floats."""
    return values.astype(float) if is_regression(task) else values.astype(str)


def predictions(predicted: Any, task: str, index: Any = None) -> pd.Series:
    """An estimator's predictions as the task's metrics compare them: strings, or floats."""
    if is_regression(task):
        return pd.Series(np.asarray(predicted, dtype=float), index=index)
    return pd.Series(predicted, index=index).astype(str)


def can_score(champion: Any, rows: pd.DataFrame, task: str) -> bool:
    """Whether the champion can score `rows` on the task's terms: it has every feature it needs
    (else it could not serve them either) and, for regression, it predicts numbers."""
    if not all(c in rows.columns for c in champion.feature_names_in_):
        return False
    return is_regressor(champion) or not is_regression(task)


def champion_predictions(champion: Any, rows: pd.DataFrame, task: str) -> np.ndarray:
    """The champion's predictions of `rows`; UNSCORABLE labels, or NaN, where it cannot score
    them (can_score)."""
    if not can_score(champion, rows, task):
        if is_regression(task):
            return np.full(len(rows), np.nan)
        return np.full(len(rows), UNSCORABLE, dtype=object)
    features = [str(c) for c in champion.feature_names_in_]
    return predictions(champion.predict(rows[features]), task).to_numpy()


def as_scored(truth: np.ndarray, champion: np.ndarray, task: str) -> np.ndarray:
    """The champion's predictions as its metrics count them: a regression row it cannot score
    (NaN) counts as paired.STAND_IN_ERROR wrong, as in the paired comparison."""
    if not is_regression(task):
        return champion
    y = np.asarray(truth, dtype=float)
    return paired.stand_in(y, champion)


def folds(values: pd.Series, task: str, most: int) -> int:
    """Folds for a cross-validated evaluation: `most`, fewer when the rarest class (regression:
    the window) has fewer rows, 0 (fall back to a holdout) when it has fewer than two."""
    if is_regression(task):
        return min(most, len(values)) if len(values) >= 2 else 0
    counts = values.astype(str).value_counts()
    if len(counts) < 2 or counts.min() < 2:
        return 0
    return min(most, int(counts.min()))


def splitter(n_splits: int, task: str) -> KFold | StratifiedKFold:
    """Unshuffled folds: stratified by class, or by position only for regression."""
    return KFold(n_splits=n_splits) if is_regression(task) else StratifiedKFold(n_splits=n_splits)
