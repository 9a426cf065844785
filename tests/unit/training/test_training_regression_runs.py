"""Regression runs through the executor, the registry port and reproduction: the drift wait
assumes (then observes) the spread of the per-row error reduction, targets that are no numbers
are noted on the run, an artifact serving could not load fails its run before registration,
the policy metric defaults to MAE, and a regressor is reproduced within a stated tolerance."""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from registry_fake import FakeRegistry
from river.datasets import synth

from driftloop.services.training.adapters.registry import TrainingRegistry, evidence, model_spec
from driftloop.services.training.core import reproduce as reproduction
from driftloop.services.training.core import trainer
from driftloop.services.training.core.domain import (
    Evidence,
    ModelInfo,
    ModelSpec,
    RegisteredVersion,
    Registration,
)
from driftloop.services.training.core.drift_wait import first_wait
from driftloop.services.training.core.executor import RunExecutor, lineage_params, servable
from driftloop.services.training.core.runs import RunStore
from driftloop.services.validation.core import curation
from driftloop.shared import artifacts, manifest
from driftloop.shared import registry_types as reg
from driftloop.shared.errors import InvalidInput
from driftloop.shared.estimators import REGRESSION
from driftloop.shared.objectstore import LocalObjectStore as LocalStore
from driftloop.shared.paired import ASSUMED_SPREAD, PairedComparison, rows_needed
from driftloop.shared.profile import ReferenceProfile
from driftloop.shared.run_record import RunRecord, run_record_key

pytestmark = pytest.mark.unit
SPEC = ModelSpec(task=REGRESSION, estimator="ridge", min_rows=50, window_rows=10_000)


def curate(store: LocalStore, batch: str, n: int, start: float, bad: int = 0) -> None:
    """`n` Friedman rows (river's generator) with the target as decimal text, as labels travel;
    the first `bad` targets are text that is no number."""
    rows = list(itertools.islice(synth.Friedman(seed=int(start)), n))
    columns = {f"x{k}": [x[k] for x, _ in rows] for k in range(5)}
    target = [repr(y) for _, y in rows]
    target[:bad] = ["n/a"] * bad
    table = pa.table(
        {**columns, "y": target, "_ingested_at": start + np.arange(n, dtype=float) / n}
    )
    curation.curate_batch(store, "sensors", batch, table, "schema-1")


def test_the_first_drift_wait_assumes_a_spread_of_the_error_reduction() -> None:
    spec = replace(SPEC, evidence=Evidence(min_improvement=0.05))
    rows, why = first_wait(spec, floor=500)
    assert rows == rows_needed(0.05, 0.0, spread=ASSUMED_SPREAD) > 1000
    assert f"spread of the relative mae reduction is {ASSUMED_SPREAD:.2f}" in why
    assert "discordant" not in why and "assumed before any candidate" in why
    classified, why_classified = first_wait(replace(spec, task="classification"), floor=500)
    assert classified != rows and "15% of rows are discordant" in why_classified


def comparison(spread: float) -> PairedComparison:
    return PairedComparison(
        "mae", 500, 1.0, 1.02, 0.02, -0.01, 0.05, 0.2, 0.95, "paired-bootstrap", 0.9, spread
    )


def test_a_regression_retry_waits_for_what_the_observed_spread_needs(tmp_path: Path) -> None:
    runs = RunStore(tmp_path / "runs.db")
    ex = RunExecutor(runs, LocalStore(tmp_path / "objects"), registry=None)  # type: ignore[arg-type]
    first = runs.queue("m", "drift", episode_id="ep-1", data_since=1.0)
    assert first is not None
    inconclusive = Registration("2", False, "why", {}, "inconclusive", 0)
    retry = ex._retry_if_undecided(first, SPEC, inconclusive, 500, comparison(1.2))
    needed = rows_needed(SPEC.evidence.min_improvement, 0.0, spread=1.2)
    assert retry is not None and retry.wait_rows == min(SPEC.window_rows, needed) > 1000
    assert "observed spread 1.20 of the per-row relative mae reduction" in retry.wait_reason
    # classification keeps its rule: double the rows, or what the registry says
    other = runs.queue("n", "drift", episode_id="ep-2", data_since=1.0)
    assert other is not None
    spec = replace(SPEC, task="classification")
    plain = ex._retry_if_undecided(other, spec, inconclusive, 500, comparison(1.2))
    assert plain is not None and plain.wait_rows == 1000


def test_an_artifact_serving_could_not_load_is_refused_naming_its_types() -> None:
    frame = pd.DataFrame({"a": np.arange(60.0), "y": np.arange(60.0) * 2})
    spec = replace(
        SPEC,
        estimator="sklearn.neighbors.KNeighborsRegressor",
        params={"metric": '"chebyshev"'},
    )
    result = trainer.train_candidate("m", frame, "y", spec)
    with pytest.raises(InvalidInput, match="ChebyshevDistance64") as refused:
        servable(artifacts.dump_model(result.pipeline), spec.estimator)
    assert "cannot be served, so it is not registered" in str(refused.value)
    assert "TRUSTED_TYPES" in str(refused.value)
    servable(artifacts.dump_model(trainer.train_candidate("m", frame, "y", SPEC).pipeline), "ridge")


def fake_registry(spec: reg.TrainingSpec) -> FakeRegistry:
    fake = FakeRegistry()
    fake.put_model(reg.Model("s", "sensors", "y", spec, spec_version=1))
    return fake


REG_SPEC = reg.TrainingSpec(
    estimator="ridge",
    window_rows=2000,
    holdout_fraction=0.2,
    min_rows=100,
    task="regression",
    # the fake registry's policy: a floor on the policy metric, here R² (higher is better)
    policy=reg.PromotionPolicy(metric="r2", floor=0.5),
)


async def execute(tmp_path: Path, spec: reg.TrainingSpec) -> tuple[RunStore, LocalStore, str]:
    runs = RunStore(tmp_path / "runs.db")
    store = LocalStore(tmp_path / "objects")
    curate(store, "b1", 400, 1000.0, bad=7)
    ex = RunExecutor(runs, store, TrainingRegistry(fake_registry(spec)))  # type: ignore[arg-type]
    queued = runs.queue("s", "manual", reason="first")
    claimed = runs.claim_next()
    assert queued is not None and claimed is not None
    await ex.execute(claimed)
    return runs, store, queued.run_id


async def test_a_regression_run_notes_left_out_targets_and_registers(tmp_path: Path) -> None:
    runs, store, run_id = await execute(tmp_path, REG_SPEC)
    done = runs.get(run_id)
    assert done is not None and done.state == "succeeded", done.error
    assert (
        done.reason == "first; 7 rows left out: target 'y' does not parse as a finite number "
        "(e.g. 'n/a')"
    )
    assert done.promoted and done.training_rows == 393  # no champion: all, out of fold
    assert done.metrics["r2"] > 0.5 and "accuracy" not in done.metrics
    base = f"artifacts/s/{run_id}"
    profile = ReferenceProfile.from_json(store.get(f"{base}/profile.json"))
    assert profile.task == "regression" and profile.target is not None
    assert profile.target.kind == "numeric"
    record = RunRecord.from_json(store.get(run_record_key("s", run_id)))
    assert set(record.metrics) >= {"mae", "rmse", "r2"}
    pipeline = artifacts.load_model(
        store.get(f"{base}/model.skops"), artifacts.sha256(store.get(f"{base}/model.skops"))
    )
    assert artifacts.signature(pipeline).task == "regression"


async def test_a_run_whose_artifact_would_not_load_fails_unregistered(tmp_path: Path) -> None:
    spec = replace(
        REG_SPEC,
        estimator="sklearn.neighbors.KNeighborsRegressor",
        params={"metric": '"chebyshev"'},
    )
    runs, store, run_id = await execute(tmp_path, spec)
    failed = runs.get(run_id)
    assert failed is not None and failed.state == "failed"
    assert "ChebyshevDistance64" in failed.error and not failed.registered_version
    assert not store.exists(f"artifacts/s/{run_id}/model.skops")


async def test_too_few_numeric_targets_fail_the_run_clearly(tmp_path: Path) -> None:
    runs, _, run_id = await execute(tmp_path, replace(REG_SPEC, min_rows=395))
    failed = runs.get(run_id)
    assert failed is not None and failed.state == "failed"
    assert failed.error.startswith("only 393 curated rows with a numeric 'y' value")
    assert "needs at least 395 (7 rows left out: target 'y' does not parse" in failed.error


def test_the_policy_metric_and_defaults_follow_the_task() -> None:
    assert evidence(reg.PromotionPolicy(), "regression").metric == "mae"
    assert evidence(reg.PromotionPolicy()).metric == "accuracy"
    assert evidence(reg.PromotionPolicy(metric="rmse"), "regression").metric == "rmse"
    found = model_spec(reg.TrainingSpec(task="regression", search=reg.SearchSpec({"a": "[1]"})))
    assert (found.task, found.estimator, found.policy_metric) == (
        "regression",
        "gradient_boosting",
        "mae",
    )
    assert found.search.scoring == "mae"
    plain = model_spec(reg.TrainingSpec(estimator="logistic_regression"))
    assert (plain.task, plain.policy_metric) == ("classification", "accuracy")
    assert ModelSpec().policy_metric == "accuracy" and SPEC.policy_metric == "mae"


def test_a_note_on_the_reason_is_added_once(tmp_path: Path) -> None:
    runs = RunStore(tmp_path / "runs.db")
    run = runs.queue("m", "manual")
    assert run is not None
    runs.add_reason(run.run_id, "3 rows left out")
    runs.add_reason(run.run_id, "3 rows left out")  # a requeued run notes it again
    assert runs.get(run.run_id).reason == "3 rows left out"  # type: ignore[union-attr]
    runs.add_reason(run.run_id, "more")
    assert runs.get(run.run_id).reason == "3 rows left out; more"  # type: ignore[union-attr]


def registered_version(store: LocalStore) -> tuple[ModelInfo, RegisteredVersion]:
    pinned = manifest.latest_manifest(store, "sensors")
    assert pinned is not None
    window = trainer.select_window(manifest.read_snapshot(store, pinned), "y", 2000, REGRESSION)
    result = trainer.train_candidate("s", window, "y", SPEC)
    body = artifacts.dump_model(result.pipeline)
    store.put("artifacts/s/r1/model.skops", body)
    version = RegisteredVersion(
        model="s",
        version="1",
        run_id="r1",
        artifact_uri="artifacts/s/r1/model.skops",
        artifact_sha256=artifacts.sha256(body),
        metrics=result.metrics,
        manifest_version=pinned.version,
        params=lineage_params(SPEC, result, None),
    )
    return ModelInfo("s", "sensors", "y", SPEC), version


def test_a_regressor_reproduces_within_the_stated_tolerance(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    curate(store, "b1", 400, 1000.0, bad=3)
    model, version = registered_version(store)
    assert version.params["task"] == "regression"
    spec, _ = reproduction.spec_from_lineage(version.params)
    assert spec.task == "regression"
    found = reproduction.reproduce(store, model, version)
    assert found.matched, found.differences
    assert (found.holdout_rows, found.prediction_mismatches) == (80, 0)
    # an MAE off by more than the relative tolerance is a difference
    off = {**version.metrics, "mae": version.metrics["mae"] * (1 + 1e-6)}
    found = reproduction.reproduce(store, model, replace(version, metrics=off))
    assert not found.matched and found.differences[0].startswith("mae: recorded")


def test_regressor_predictions_match_within_float_noise_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    curate(store, "b1", 200, 1000.0)
    pinned = manifest.latest_manifest(store, "sensors")
    assert pinned is not None
    window = trainer.select_window(manifest.read_snapshot(store, pinned), "y", 2000, REGRESSION)
    fitted = trainer.train_candidate("s", window, "y", SPEC).pipeline
    noisy, shifted = copy.deepcopy(fitted), copy.deepcopy(fitted)
    noisy.named_steps["model"].intercept_ *= 1 + 1e-13  # summation-order noise
    shifted.named_steps["model"].intercept_ += 1e-4
    assert reproduction._mismatches(fitted, noisy, window, numbers=True) == 0
    assert reproduction._mismatches(fitted, shifted, window, numbers=True) == len(window)
