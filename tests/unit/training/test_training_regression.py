"""Regression in the trainer: a numeric target is fitted, scored (MAE, RMSE, R²), compared with a
champion on the same rows (relative MAE reduction), evaluated out of fold on unshuffled folds,
sliced and searched with the task's metrics; targets that are no numbers are left out and
counted. The data comes from river's Friedman generators (a foreign source of a known concept
and of its drift), not from driftloop's own code."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river.datasets import synth
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import GridSearchCV, KFold, cross_val_predict

from driftloop.services.training.core import tasks, trainer
from driftloop.services.training.core.domain import Evidence, ModelSpec
from driftloop.shared import artifacts, estimators
from driftloop.shared.errors import InvalidInput
from driftloop.shared.estimators import REGRESSION, SearchSpec
from driftloop.shared.paired import compare

pytestmark = pytest.mark.unit
SPEC = ModelSpec(task=REGRESSION, estimator="ridge", min_rows=50)
FOREST = replace(SPEC, estimator="random_forest", params={"n_estimators": "20"})
DRIFT_AT = 600


def friedman(n: int, skip: int = 0, seed: int = 7) -> pd.DataFrame:
    """Rows `skip` .. `skip + n` of river's FriedmanDrift stream: the Friedman #1 concept,
    whose relevant features swap places (global abrupt drift) at row DRIFT_AT."""
    stream = synth.FriedmanDrift(drift_type="gra", position=(DRIFT_AT, 10**9), seed=seed)
    rows = list(itertools.islice(stream, skip, skip + n))
    frame = pd.DataFrame([{f"x{k}": v for k, v in x.items()} for x, _ in rows])
    frame["y"] = [y for _, y in rows]
    frame["_ingested_at"] = np.arange(skip, skip + n, dtype=float)
    return frame


def before() -> pd.DataFrame:
    return friedman(DRIFT_AT)


def after() -> pd.DataFrame:
    return friedman(600, skip=DRIFT_AT)


def test_a_regressor_fits_scores_and_profiles_numbers() -> None:
    window = trainer.select_window(before(), "y", 2000, REGRESSION)
    result = trainer.train_candidate("m", window, "y", SPEC)
    assert result.evaluation == trainer.HOLDOUT and result.holdout_rows == 120
    assert {"mae", "rmse", "r2"} <= set(result.metrics) <= {"mae", "rmse", "r2", "mape"}
    assert "accuracy" not in result.metrics and result.champion_metrics == {}
    assert result.metrics["r2"] > 0.6 and result.metrics["rmse"] >= result.metrics["mae"] > 0
    # the metrics are scikit-learn's on the newest fifth of the window
    holdout = window.tail(120)
    features = [f"x{k}" for k in range(10)]
    expected = mean_absolute_error(holdout["y"], result.pipeline.predict(holdout[features]))
    assert result.metrics["mae"] == pytest.approx(expected)
    sig = artifacts.signature(result.pipeline)
    assert sig.task == "regression" and sig.classes == ()
    profile = result.profile
    assert profile.task == "regression" and profile.rows == result.training_rows == 480
    assert profile.target is not None and profile.target.kind == "numeric"
    assert profile.prediction is not None and profile.prediction.kind == "numeric"
    assert profile.metrics["mae"] == result.metrics["mae"]
    assert profile.metrics["holdout_rows"] == 120


def test_a_drifted_champion_loses_on_the_same_rows_out_of_fold() -> None:
    champion = trainer.train_candidate("m", before(), "y", FOREST).pipeline
    window = after()
    result = trainer.train_candidate("m", window, "y", FOREST, champion, cross_validate=True)
    assert result.evaluation == trainer.CROSS_VALIDATED
    assert result.holdout_rows == result.training_rows == len(window)
    c = result.comparison
    assert c is not None and c.metric == "mae" and c.method == "paired-bootstrap"
    assert c.rows == len(window) and c.p_value < 0.01 and c.lower > 0.2
    assert c.candidate == pytest.approx(result.metrics["mae"])
    assert c.champion == pytest.approx(result.champion_metrics["mae"])
    # the difference is the relative MAE reduction, the policy's unit for an error metric
    assert c.difference == pytest.approx((c.champion - c.candidate) / c.champion)
    assert 0 < c.spread < 2
    # the champion is scored on exactly the window's rows, in order
    features = [f"x{k}" for k in range(10)]
    mae = mean_absolute_error(window["y"], champion.predict(window[features]))
    assert result.champion_metrics["mae"] == pytest.approx(mae)


def test_out_of_fold_predictions_use_unshuffled_unstratified_folds() -> None:
    window = trainer.select_window(after(), "y", 2000, REGRESSION)
    features = [f"x{k}" for k in range(10)]
    pipeline = trainer.build_pipeline(window, features, SPEC)
    found = trainer.out_of_fold(pipeline, window[features], window["y"], 5, REGRESSION)
    assert found.dtype == float
    expected = cross_val_predict(pipeline, window[features], window["y"], cv=KFold(5))
    np.testing.assert_array_equal(found, expected)
    assert isinstance(tasks.splitter(5, REGRESSION), KFold)
    assert tasks.folds(window["y"], REGRESSION, 5) == 5
    assert tasks.folds(window["y"].head(3), REGRESSION, 5) == 3
    assert tasks.folds(window["y"].head(1), REGRESSION, 5) == 0  # falls back to a holdout


def test_a_champion_that_cannot_score_loses_every_row() -> None:
    champion = trainer.train_candidate("m", before(), "y", SPEC).pipeline
    window = after().drop(columns=["x9"])  # a feature the champion needs is gone
    predicted = trainer.predict_champion(champion, window, REGRESSION)
    assert predicted.dtype == float and np.isnan(predicted).all()
    result = trainer.train_candidate("m", window, "y", SPEC, champion)
    c = result.comparison
    assert c is not None and c.difference > 0.99 and c.p_value == 0
    assert result.champion_metrics["mae"] > 1e9  # the paired comparison's stand-in error
    assert result.champion_slices == ()
    # a classifier cannot be compared as numbers: it scores nothing either
    labels = np.where(window["y"] > 14, "high", "low")
    classifier = LogisticRegression().fit(window[["x0", "x1"]], labels)
    assert np.isnan(trainer.predict_champion(classifier, window, REGRESSION)).all()
    sliced = replace(SPEC, slice_columns=("band",))
    banded = window.assign(band=np.where(window["x0"] > 0.5, "high", "low"))
    result = trainer.train_candidate("m", banded, "y", sliced, classifier)
    assert result.comparison is not None and result.comparison.difference > 0.99
    assert result.champion_slices == () and len(result.slices) == 2


def test_slices_carry_regression_metrics() -> None:
    window = before()
    window["region"] = np.where(window["x5"] > 0.5, "north", "south")
    window.loc[window.index[:40], "region"] = None
    spec = replace(SPEC, slice_columns=("region",))
    champion = trainer.train_candidate("m", window, "y", spec).pipeline
    result = trainer.train_candidate("m", window, "y", spec, champion)
    by_value = {s.value: s for s in result.slices}
    assert set(by_value) <= {"north", "south", trainer.MISSING}
    assert sum(s.rows for s in result.slices) == result.holdout_rows
    for s in result.slices:
        assert {"mae", "rmse"} <= set(s.metrics) and "accuracy" not in s.metrics
    assert {s.value for s in result.champion_slices} == set(by_value)
    north = window.tail(result.holdout_rows)
    north = north[north["region"] == "north"]
    predicted = result.pipeline.predict(north[result.features])
    assert by_value["north"].metrics["mae"] == pytest.approx(
        mean_absolute_error(north["y"], predicted)
    )


def test_the_search_scores_by_mae_on_kfolds_and_reports_the_mae_itself() -> None:
    window = before()
    search = SearchSpec(param_grid={"alpha": "[0.01, 100.0]"}, cv=3)
    result = trainer.train_candidate("m", window, "y", replace(SPEC, search=search))
    assert result.search is not None and result.search.method == "grid"
    assert result.search.best_params == {"alpha": "0.01"}
    # the same search by hand: scikit-learn's negated MAE on unshuffled KFold
    train = window.head(480)
    pipeline = trainer.build_pipeline(train, result.features, SPEC)
    manual = GridSearchCV(
        pipeline,
        {"model__alpha": [0.01, 100.0]},
        cv=KFold(3),
        scoring="neg_mean_absolute_error",
    ).fit(train[result.features], train["y"])
    assert result.search.best_score == pytest.approx(-manual.best_score_)
    assert result.search.best_score > 0
    assert isinstance(result.pipeline.named_steps["model"], Ridge)
    # a classification metric cannot score a regression search
    wrong = replace(SPEC, search=replace(search, scoring="accuracy"))
    with pytest.raises(InvalidInput, match="'accuracy' measures classification"):
        trainer.train_candidate("m", window, "y", wrong)


def test_a_policy_metric_other_than_mae_compares_by_it() -> None:
    champion = trainer.train_candidate("m", before(), "y", SPEC).pipeline
    spec = replace(SPEC, evidence=Evidence(metric="rmse"))
    result = trainer.train_candidate("m", after(), "y", spec, champion)
    assert spec.policy_metric == "rmse" and SPEC.policy_metric == "mae"
    assert result.comparison is not None and result.comparison.metric == "rmse"
    assert result.comparison.candidate == pytest.approx(result.metrics["rmse"])


def test_targets_that_are_no_numbers_are_left_out_and_counted() -> None:
    frame = before()
    text = frame["y"].map(repr).astype(object)
    text.iloc[[3, 10, 20]] = ["n/a", "12,5", "inf"]
    text.iloc[30] = None  # no target at all: left out, not counted
    frame["y"] = text
    parsed = tasks.numeric_target(frame, "y")
    assert parsed.left_out == 3 and len(parsed.rows) == len(frame) - 4
    assert set(parsed.examples) == {"'n/a'", "'12,5'", "'inf'"}  # shown safely, quoted
    assert parsed.rows["y"].dtype == float
    assert "3 rows left out: target 'y' does not parse" in parsed.note("y")
    window = trainer.select_window(frame, "y", 100, REGRESSION)
    assert len(window) == 100 and window["y"].dtype == float
    assert window["_ingested_at"].tolist() == frame["_ingested_at"].tail(100).tolist()
    result = trainer.train_candidate("m", frame, "y", SPEC)
    assert result.left_out_rows == 3 and result.training_rows + result.holdout_rows == 596
    assert result.metrics["r2"] > 0.6


@pytest.mark.parametrize(
    "values, message",
    [
        (["abc"] * 60, "0 rows have a numeric target 'y'.*60 rows left out.*abc"),
        (
            ["1.5"] * 10 + ["x"] * 50,
            "10 rows have a numeric target 'y'; a regression needs at least 50.*50 rows left out",
        ),
        (
            [str(v) for v in range(10)],
            "10 rows have a numeric target 'y'; a regression needs at "
            "least 50 \\(spec.min_rows\\)$",
        ),
    ],
)
def test_too_few_numeric_targets_are_refused_clearly(values: list[str], message: str) -> None:
    frame = pd.DataFrame({"x": np.arange(len(values), dtype=float), "y": values})
    with pytest.raises(InvalidInput, match=message):
        trainer.train_candidate("m", frame, "y", SPEC)


def test_a_constant_target_is_fine_for_a_regressor() -> None:
    frame = before().assign(y=3.25)
    result = trainer.train_candidate("m", frame, "y", SPEC)
    assert result.metrics["mae"] == pytest.approx(0, abs=1e-9)
    assert result.metrics["r2"] == 1.0
    oof = trainer.train_candidate("m", frame, "y", SPEC, cross_validate=True)
    assert oof.evaluation == trainer.CROSS_VALIDATED


def test_predictions_and_truth_are_floats_for_the_paired_comparison() -> None:
    truth = tasks.truth(pd.Series(["1.5", 2, 3.0]).astype(float), REGRESSION)
    assert truth.dtype == float
    scored = tasks.as_scored(truth, np.array([1.0, np.nan, 3.0]), REGRESSION)
    assert scored[1] > 1e12 and scored[0] == 1.0
    c = compare(truth, np.array([1.5, 2.0, 3.0]), np.array([1.0, np.nan, 3.0]), "mae")
    champion = estimators.score(truth, scored, REGRESSION)["mae"]
    assert c.champion == pytest.approx(champion)  # the metrics and the comparison agree


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.text(max_size=8),
            st.floats(allow_nan=True, allow_infinity=True).map(repr),
            st.integers(-(10**20), 10**20).map(str),
        ),
        max_size=30,
    )
)
def test_any_target_text_parses_or_is_counted_never_raises(values: list[str | None]) -> None:
    frame = pd.DataFrame({"x": np.arange(len(values), dtype=float), "y": values}, dtype=object)
    frame["x"] = frame["x"].astype(float)
    parsed = tasks.numeric_target(frame, "y")
    missing = sum(v is None for v in values)
    assert len(parsed.rows) + parsed.left_out + missing == len(values)
    assert parsed.rows["y"].dtype == float and np.isfinite(parsed.rows["y"]).all()
    assert len(parsed.examples) <= tasks.EXAMPLES and bool(parsed.examples) == bool(parsed.left_out)
