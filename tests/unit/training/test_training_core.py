"""Training's pure parts: window and holdout selection, the pipeline, metrics, the profile,
and the run table (episode idempotency, recovery of interrupted runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.services.training.core import trainer
from driftloop.services.training.core.domain import ModelSpec, Registration
from driftloop.services.training.core.runs import RunStore
from driftloop.shared import artifacts
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit


def frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    color = rng.choice(["red", "blue"], n)
    label = np.where(x + (color == "red") > 0.5, "yes", "no")
    # shuffled ingestion times: the window and holdout must follow time, not row order
    ingested = rng.permutation(n).astype(float) + 1_000.0
    return pd.DataFrame({"x": x, "color": color, "label": label, "_ingested_at": ingested})


def test_holdout_is_the_most_recent_rows() -> None:
    window = trainer.select_window(frame(), "label", 2000)
    train, holdout = trainer.split_holdout(window, 0.25)
    assert len(holdout) == 100 and len(train) == 300
    assert train["_ingested_at"].max() < holdout["_ingested_at"].min()


def test_window_keeps_the_most_recent_rows_with_a_target() -> None:
    df = frame()
    df.loc[df["_ingested_at"] == df["_ingested_at"].max(), "label"] = None
    window = trainer.select_window(df, "label", 50)
    assert len(window) == 50 and window["label"].notna().all()
    newest_labelled = df[df["label"].notna()]["_ingested_at"].nlargest(50)
    assert sorted(window["_ingested_at"]) == sorted(newest_labelled)


def test_pipeline_fits_scores_and_profiles() -> None:
    window = trainer.select_window(frame(), "label", 2000)
    result = trainer.train_candidate("m", window, "label", ModelSpec())
    assert result.features == ["x", "color"]
    assert result.metrics["accuracy"] > 0.9 and set(result.metrics) == {"accuracy", "f1_macro"}
    assert result.champion_metrics == {}
    sig = artifacts.signature(result.pipeline)
    assert [(f.name, f.kind) for f in sig.features] == [("x", "numeric"), ("color", "categorical")]
    assert sig.classes == ("no", "yes")
    assert result.profile.rows == result.training_rows == 320
    assert result.profile.feature("color").kind == "categorical"
    assert result.profile.prediction is not None
    assert set(result.profile.prediction.frequencies) <= {"no", "yes"}


def test_same_data_gives_the_same_metrics() -> None:
    window = trainer.select_window(frame(), "label", 2000)
    for estimator in ("logistic_regression", "random_forest", "gradient_boosting"):
        spec = ModelSpec(estimator=estimator)
        a = trainer.train_candidate("m", window, "label", spec)
        b = trainer.train_candidate("m", window, "label", spec)
        assert a.metrics == b.metrics, estimator


def test_champion_is_scored_on_the_same_holdout() -> None:
    window = trainer.select_window(frame(), "label", 2000)
    first = trainer.train_candidate("m", window, "label", ModelSpec())
    second = trainer.train_candidate("m", window, "label", ModelSpec(), champion=first.pipeline)
    assert second.champion_metrics == first.metrics


def test_params_are_json_and_bad_ones_say_so() -> None:
    window = trainer.select_window(frame(), "label", 2000)
    spec = ModelSpec(estimator="random_forest", params={"n_estimators": "5", "max_depth": "3"})
    result = trainer.train_candidate("m", window, "label", spec)
    assert result.pipeline.named_steps["model"].n_estimators == 5
    with pytest.raises(InvalidInput, match="JSON"):
        trainer.make_estimator(ModelSpec(params={"C": "oops"}))
    with pytest.raises(InvalidInput, match="not in the curated data"):
        trainer.train_candidate("m", window, "label", ModelSpec(features=("nope",)))


def test_single_class_window_is_refused() -> None:
    df = frame()
    df["label"] = "yes"
    with pytest.raises(InvalidInput, match="single class"):
        trainer.train_candidate("m", df, "label", ModelSpec())


def test_artifact_round_trips_through_the_hash_checked_loader() -> None:
    window = trainer.select_window(frame(), "label", 2000)
    body = artifacts.dump_model(trainer.train_candidate("m", window, "label", ModelSpec()).pipeline)
    loaded = artifacts.load_model(body, artifacts.sha256(body))
    assert list(loaded.feature_names_in_) == ["x", "color"]


def test_run_table_is_idempotent_by_episode_and_recovers(tmp_path: Path) -> None:
    runs = RunStore(tmp_path / "training.db")
    try:
        first = runs.queue("m", "drift", episode_id="ep-1", correlation_id="c", causation_id="e")
        assert first is not None and first.correlation_id == "c"
        assert runs.queue("m", "drift", episode_id="ep-1") is None
        manual = runs.queue("m", "manual")
        assert manual is not None and manual.correlation_id == manual.run_id
        assert runs.queue("m", "auto", only_if_no_runs=True) is None
        claimed = runs.claim_next()
        assert claimed is not None and claimed.run_id == first.run_id
        assert claimed.state == "running"
        assert runs.requeue_interrupted() == 1
        assert runs.get(first.run_id).state == "queued"
        runs.claim_next()
        runs.succeed(first.run_id, Registration("1", True, "why", {"accuracy": 0.9}), 1.5)
        done = runs.get(first.run_id)
        assert (done.state, done.registered_version, done.promoted) == ("succeeded", "1", True)
        assert done.metrics == {"accuracy": 0.9}
        assert [r.run_id for r in runs.list("m")] == [manual.run_id, first.run_id]
        assert runs.list("m", limit=1)[0].run_id == manual.run_id
    finally:
        runs.close()


def test_default_features_leave_out_bad_or_colliding_names_and_say_so() -> None:
    """Data curated before validation refused such names can never make a run fail (#17)."""
    import pandas as pd
    from structlog.testing import capture_logs

    from driftloop.services.training.core.domain import ModelSpec
    from driftloop.services.training.core.trainer import feature_columns

    frame = pd.DataFrame(
        {"x0": [1], "x0\u0000": [2], "x1\u202e": [3], "X0": [4], "_ingested_at": [0], "y": ["a"]}
    )
    with capture_logs() as logs:
        assert feature_columns(frame, "y", ModelSpec()) == ["x0"]
    (warning,) = [e for e in logs if e["event"] == "feature_columns_left_out"]
    assert warning["columns"] == ["'x0\\x00'", "'x1\\u202e'", "'X0'"]
