"""Fit and evaluate one candidate on a data window: pure scikit-learn, no IO.

Two ways to evaluate, both scoring the champion on exactly the rows the candidate is scored on,
so the registry compares like with like through a paired comparison (driftloop.shared.paired):
- "holdout": the most recent slice of the window (by ingestion time) is held out;
- "cross-validated" (drift runs): every row of the post-drift window is predicted by a model fitted
  on the other folds (contiguous, unshuffled), so the comparison sees all of the window's rows
  instead of a fifth of them, and the candidate is then fitted on the whole window. After a
  drift the window holds one regime, so there is no "more recent" part worth holding out, and
  five times the evaluated rows is what lets a few points of improvement show within one
  window. With a search spec, the out-of-fold predictions use the parameters the search chose
  on the whole window (slightly optimistic; nested search would cost cv x folds fits).

The spec's task decides how targets and predictions are read (labels or numbers), how folds are
split, and which metrics score them (driftloop.services.training.core.tasks).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import platform
import random
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import structlog
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from driftloop.services.training.core import tasks
from driftloop.services.training.core.domain import ModelSpec, SliceScore
from driftloop.shared import estimators
from driftloop.shared.errors import InvalidInput
from driftloop.shared.estimators import CLASSIFICATION, DEFAULT_METRICS, SEED, task_of
from driftloop.shared.manifest import INGESTED_AT
from driftloop.shared.names import check_column_name, shown
from driftloop.shared.paired import PairedComparison, compare
from driftloop.shared.profile import ReferenceProfile, build_profile

log = structlog.get_logger(__name__)

MAX_SLICE_VALUES = 100
"""Slices scored per slice column (its most frequent values)."""
MISSING = "<missing>"
FOLDS = 5
"""Folds of a cross-validated evaluation (fewer when a class has fewer rows)."""
HOLDOUT, CROSS_VALIDATED = "holdout", "cross-validated"
UNSCORABLE = tasks.UNSCORABLE
"""The champion's "prediction" for rows lacking a feature it needs: never equal to a label."""
LIBRARIES = ("scikit-learn", "numpy", "pandas", "pyarrow", "scipy", "skops")


@dataclass(frozen=True)
class SearchResult:
    best_params: dict[str, str]
    """Estimator parameter -> JSON value the search chose."""
    best_score: float
    """Mean cross-validated value of the scoring metric for the best parameters (an error
    metric as itself, e.g. an MAE, not scikit-learn's negated score)."""
    candidates: int
    method: str
    """"grid" or "random" (a sample of max_candidates combinations)."""


@dataclass(frozen=True)
class TrainedCandidate:
    pipeline: Pipeline
    metrics: dict[str, float]
    champion_metrics: dict[str, float]
    profile: ReferenceProfile
    features: list[str]
    training_rows: int
    holdout_rows: int
    fit_seconds: float
    slices: tuple[SliceScore, ...] = ()
    champion_slices: tuple[SliceScore, ...] = ()
    search: SearchResult | None = None
    comparison: PairedComparison | None = None
    """Candidate vs champion on the evaluated rows (None without a champion)."""
    evaluation: str = HOLDOUT
    left_out_rows: int = 0
    """Regression: rows of the window whose target did not parse as a number."""


def feature_columns(frame: pd.DataFrame, target: str, spec: ModelSpec) -> list[str]:
    """spec.features, or every column except the target and driftloop's "_" columns.

    Without explicit features, a column whose name is not a valid column name (control,
    bidirectional or zero-width characters: data curated before validation refused them), or
    that collides with another after Unicode normalisation, is left out and named in the log,
    so such a name can never make a run fail."""
    if spec.features:
        missing = [c for c in spec.features if c not in frame.columns]
        if missing:
            raise InvalidInput(f"feature columns {missing} are not in the curated data")
        return list(spec.features)
    candidates = [c for c in frame.columns if c != target and not str(c).startswith("_")]
    kept, left_out, seen = [], [], set()
    for column in candidates:
        folded = unicodedata.normalize("NFKC", str(column)).casefold()
        try:
            check_column_name(str(column))
        except InvalidInput:
            left_out.append(column)
            continue
        if folded in seen:
            left_out.append(column)
            continue
        seen.add(folded)
        kept.append(column)
    if left_out:
        log.warning("feature_columns_left_out", columns=[shown(str(c)) for c in left_out])
    return kept


def select_window(
    frame: pd.DataFrame,
    target: str,
    window_rows: int,
    task: str = CLASSIFICATION,
    partition_by: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Rows with a target, in ingestion order, the most recent `window_rows` of them; for
    regression, rows whose target parses as a number (tasks.numeric_target), read as floats.

    With `partition_by` (a fleet's global model), the most recent `window_rows` of EACH
    partition: the global model stands in for every partition, so it learns from each one's
    window (a fleet-wide 400-row window held 0.4 rows per route of a 1,000-route fleet, and a
    weather episode's global candidate lost to the old global on that)."""
    if target not in frame.columns:
        raise InvalidInput(f"target column {target!r} is not in the curated data")
    if tasks.is_regression(task):
        frame = tasks.numeric_target(frame, target).rows
    rows = frame[frame[target].notna()]
    if INGESTED_AT in rows.columns:
        rows = rows.sort_values(INGESTED_AT, kind="stable")
    columns = [c for c in partition_by if c in rows.columns]
    if columns:
        return (
            rows.groupby(columns, sort=False, dropna=False).tail(window_rows).reset_index(drop=True)
        )
    return rows.tail(window_rows).reset_index(drop=True)


def split_holdout(window: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): the holdout is the most recent `fraction` of the window."""
    n_holdout = max(1, math.ceil(len(window) * fraction))
    if len(window) - n_holdout < 1:
        raise InvalidInput(f"window of {len(window)} rows is too small to hold out {fraction}")
    ordered = window.sort_values(INGESTED_AT, kind="stable") if INGESTED_AT in window else window
    return ordered.iloc[:-n_holdout], ordered.iloc[-n_holdout:]


def build_pipeline(frame: pd.DataFrame, features: list[str], spec: ModelSpec) -> Pipeline:
    numeric = [c for c in features if _is_numeric(frame[c])]
    categorical = [c for c in features if c not in numeric]
    prep = ColumnTransformer(
        [
            (
                "num",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                numeric,
            ),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            ),
        ]
    )
    return Pipeline([("prep", prep), ("model", make_estimator(spec))])


def make_estimator(spec: ModelSpec) -> Any:
    """The catalogue's estimator with the spec's params: the constructor the registry checked."""
    return estimators.estimator(spec.estimator, task=spec.task).build(spec.params)


def score(
    pipeline: Any, holdout: pd.DataFrame, target: str, task: str = CLASSIFICATION
) -> dict[str, float]:
    """The catalogue's metrics of `pipeline` on `holdout` (labels compared as strings, or
    numbers for regression)."""
    features = [str(c) for c in pipeline.feature_names_in_]
    truth = pd.Series(tasks.truth(holdout[target], task))
    predicted = tasks.predictions(pipeline.predict(holdout[features]), task)
    return estimators.score(truth, predicted, task)


def train_candidate(
    model: str,
    window: pd.DataFrame,
    target: str,
    spec: ModelSpec,
    champion: Any | None = None,
    *,
    cross_validate: bool = False,
) -> TrainedCandidate:
    """Fit on `window` and score the candidate and the champion on the same rows: the newest
    part of the window (holdout), or, with `cross_validate`, every row out of fold."""
    task = spec.task
    features = feature_columns(window, target, spec)
    if not features:
        raise InvalidInput(f"no feature columns besides the target {target!r}")
    missing = [c for c in spec.slice_columns if c not in window.columns]
    if missing:
        raise InvalidInput(f"slice columns {missing} are not in the curated data")
    left_out = 0
    if tasks.is_regression(task):
        window, left_out = tasks.numeric_window(window, target, spec.min_rows)
    folds = tasks.folds(window[target], task, FOLDS) if cross_validate else 0
    train, evaluated = (window, window) if folds else split_holdout(window, spec.holdout_fraction)
    y_train = tasks.target(train[target], task)
    if not tasks.is_regression(task) and y_train.nunique() < 2:
        raise InvalidInput(f"training rows hold a single class {y_train.iloc[0]!r}: need two")
    pipeline = build_pipeline(train, features, spec)
    seed_everything()
    started = time.perf_counter()
    pipeline, searched = fit(pipeline, spec, train[features], y_train)
    if folds:
        predicted = out_of_fold(pipeline, train[features], y_train, folds, task)
    else:
        predicted = tasks.predictions(pipeline.predict(evaluated[features]), task).to_numpy()
    fit_seconds = time.perf_counter() - started
    tasks.check_predictions(predicted, task)
    truth = tasks.truth(evaluated[target], task)
    metrics = estimators.score(pd.Series(truth), pd.Series(predicted), task)
    train_predictions = tasks.predictions(pipeline.predict(train[features]), task, train.index)
    # why: the evaluated accuracy and label frequencies give the monitor a performance and
    # label-prior reference at once, instead of a burn-in of live labels after each deployment.
    # The evaluated row count tells the monitor how certain the reference accuracy is.
    profile = build_profile(
        model,
        "",
        train[features],
        train_predictions,
        target=y_train,
        metrics={**metrics, "holdout_rows": float(len(evaluated))},
        task="regression" if tasks.is_regression(task) else "classification",
    )
    champion_predicted = None if champion is None else predict_champion(champion, evaluated, task)
    return TrainedCandidate(
        pipeline=pipeline,
        metrics=metrics,
        champion_metrics=(
            {}
            if champion_predicted is None
            else estimators.score(
                pd.Series(truth),
                pd.Series(tasks.as_scored(truth, champion_predicted, task)),
                task,
            )
        ),
        profile=profile,
        features=features,
        training_rows=len(train),
        holdout_rows=len(evaluated),
        fit_seconds=fit_seconds,
        slices=slice_scores(predicted, evaluated, target, spec.slice_columns, task),
        champion_slices=(
            ()
            if champion_predicted is None or not tasks.can_score(champion, evaluated, task)
            else slice_scores(champion_predicted, evaluated, target, spec.slice_columns, task)
        ),
        search=searched,
        comparison=(
            None
            if champion_predicted is None
            else compare(
                truth,
                predicted,
                champion_predicted,
                spec.policy_metric,
                confidence=spec.evidence.confidence,
            )
        ),
        evaluation=CROSS_VALIDATED if folds else HOLDOUT,
        left_out_rows=left_out,
    )


def out_of_fold(
    pipeline: Pipeline, x: pd.DataFrame, y: pd.Series, folds: int, task: str = CLASSIFICATION
) -> np.ndarray:
    """Each row predicted by the pipeline's estimator (same parameters) fitted on the other
    folds: unshuffled, so every fold is a stretch of time (per class, when classifying)."""
    predicted = cross_val_predict(clone(pipeline), x, y, cv=tasks.splitter(folds, task), n_jobs=1)
    return tasks.predictions(predicted, task).to_numpy()


def predict_champion(champion: Any, rows: pd.DataFrame, task: str = CLASSIFICATION) -> np.ndarray:
    """The champion's predictions of `rows`; UNSCORABLE (regression: NaN) where the data no
    longer has a feature it needs (it could not serve them either)."""
    return tasks.champion_predictions(champion, rows, task)


def fit(
    pipeline: Pipeline, spec: ModelSpec, x: pd.DataFrame, y: pd.Series
) -> tuple[Pipeline, SearchResult | None]:
    """Fit `pipeline`, or with a search spec, cross-validate the grid (random sample of
    max_candidates combinations when larger) with a fixed seed and refit the best."""
    search = spec.search
    if not search.param_grid:
        return pipeline.fit(x, y), None
    grid = {f"model__{k}": json.loads(v) for k, v in sorted(search.param_grid.items())}
    # why the default: the registry fills scoring in (the policy metric); a spec built here
    # without one scores by the task's default policy metric
    scoring = estimators.metric(
        search.scoring or DEFAULT_METRICS[task_of(spec.task)], "search.scoring", spec.task
    )
    common: dict[str, Any] = {
        "cv": tasks.splitter(search.cv, spec.task),  # unshuffled: the same folds every time
        "scoring": scoring.scorer,
        "n_jobs": 1,
        "refit": True,
        "error_score": "raise",
    }
    sampled = search.candidates() < search.size()
    searcher: GridSearchCV | RandomizedSearchCV = (
        RandomizedSearchCV(
            pipeline, grid, n_iter=search.max_candidates, random_state=SEED, **common
        )
        if sampled
        else GridSearchCV(pipeline, grid, **common)
    )
    try:
        searcher.fit(x, y)
    except ValueError as exc:
        raise InvalidInput(f"hyper-parameter search failed: {exc}") from exc
    best = {
        k.removeprefix("model__"): json.dumps(_plain(v))
        for k, v in sorted(searcher.best_params_.items())
    }
    result = SearchResult(
        best_params=best,
        # why: error metrics search by scikit-learn's negated scorer; report the MAE itself
        best_score=float(searcher.best_score_) * (1 if scoring.higher_is_better else -1),
        candidates=search.candidates(),
        method="random" if sampled else "grid",
    )
    return searcher.best_estimator_, result


def slice_scores(
    predicted: np.ndarray,
    rows: pd.DataFrame,
    target: str,
    columns: tuple[str, ...],
    task: str = CLASSIFICATION,
) -> tuple[SliceScore, ...]:
    """Metrics of `predicted` (one per row of `rows`) per value of each slice column (the most
    frequent values first, at most MAX_SLICE_VALUES per column; missing values form the slice
    "<missing>")."""
    found = []
    truth = tasks.truth(rows[target], task)
    for column in columns:
        values = rows[column].astype(object).where(rows[column].notna(), MISSING)
        values = values.astype(str).to_numpy()
        for value in pd.Series(values).value_counts().index[:MAX_SLICE_VALUES]:
            inside = values == value
            found.append(
                SliceScore(
                    column,
                    str(value),
                    int(inside.sum()),
                    estimators.score(pd.Series(truth[inside]), pd.Series(predicted[inside]), task),
                )
            )
    return tuple(found)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def seed_everything(seed: int = SEED) -> None:
    """Seed the global random sources an estimator could fall back on (one fit at a time)."""
    random.seed(seed)
    np.random.seed(seed)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a fit depends on, and of Python."""
    return dict(_library_versions())


@functools.cache
def _library_versions() -> dict[str, str]:
    # why once per process: importlib.metadata scans every installed distribution (6 ms a
    # run), and the libraries a process fits with are the ones it imported at start
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


@functools.cache
def code_version() -> str:
    """The installed driftloop's version (the code that fits: read once per process)."""
    return importlib.metadata.version("driftloop")


def _is_numeric(column: pd.Series) -> bool:
    return bool(
        pd.api.types.is_numeric_dtype(column)
        and not pd.api.types.is_bool_dtype(column)
        and not np.issubdtype(column.dtype, np.timedelta64)
    )
