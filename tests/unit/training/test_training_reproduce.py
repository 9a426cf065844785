"""Reproducing a version on a local object store: the same spec, seed and pinned manifest give the
same metrics and predictions; a tampered record or a different artifact is reported as a diff."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from driftloop.services.training.core import trainer
from driftloop.services.training.core.domain import ModelInfo, ModelSpec, RegisteredVersion
from driftloop.services.training.core.executor import lineage_params
from driftloop.services.training.core.reproduce import reproduce, spec_from_lineage
from driftloop.services.validation.core import curation
from driftloop.shared import artifacts, manifest
from driftloop.shared.errors import InvalidInput
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit
SPEC = ModelSpec(estimator="random_forest", params={"n_estimators": "15"}, window_rows=500)
MODEL = ModelInfo(name="iris", dataset="flowers", target="label", spec=SPEC)


def curate(store: LocalObjectStore, batch: str, n: int, start: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    color = rng.choice(["red", "blue"], n)
    label = np.where(x + (color == "red") + rng.normal(0, 0.5, n) > 0.5, "yes", "no")
    ingested = start + np.arange(n, dtype=float) / n
    table = pa.table({"x": x, "color": color, "label": label, "_ingested_at": ingested})
    curation.curate_batch(store, "flowers", batch, table, "schema-1")


def registered(store: LocalObjectStore, since: float | None) -> RegisteredVersion:
    """Train as the executor does on the latest manifest, store the artifact, record lineage."""
    pinned = manifest.latest_manifest(store, "flowers")
    assert pinned is not None
    frame = manifest.read_snapshot(store, pinned, since=since)
    window = trainer.select_window(frame, "label", SPEC.window_rows)
    result = trainer.train_candidate("iris", window, "label", SPEC)
    body = artifacts.dump_model(result.pipeline)
    store.put("artifacts/iris/r1/model.skops", body)
    return RegisteredVersion(
        model="iris",
        version="1",
        run_id="r1",
        artifact_uri="artifacts/iris/r1/model.skops",
        artifact_sha256=artifacts.sha256(body),
        metrics=result.metrics,
        manifest_version=pinned.version,
        params=lineage_params(SPEC, result, since),
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    s = LocalObjectStore(tmp_path / "objects")
    curate(s, "b1", 300, 1_000.0, seed=1)
    curate(s, "b2", 300, 2_000.0, seed=2)
    return s


def test_same_spec_and_manifest_reproduce_exactly_even_after_new_data(
    store: LocalObjectStore,
) -> None:
    version = registered(store, since=1_999.0)
    curate(store, "b3", 300, 3_000.0, seed=3)  # newer rows must not leak into the reproduction
    found = reproduce(store, MODEL, version)
    assert found.matched, found.differences
    assert found.reproduced_metrics == version.metrics
    assert (found.holdout_rows, found.prediction_mismatches) == (60, 0)
    assert found.manifest_version == 2 and found.library_versions == {}


def test_tampered_metrics_and_a_different_artifact_are_reported(store: LocalObjectStore) -> None:
    version = registered(store, since=None)
    claimed = {**version.metrics, "accuracy": version.metrics["accuracy"] - 0.05}
    found = reproduce(store, MODEL, replace(version, metrics=claimed))
    assert not found.matched
    assert any(d.startswith("accuracy: recorded") for d in found.differences)

    other = trainer.train_candidate(
        "iris",
        trainer.select_window(
            manifest.read_snapshot(store, manifest.read_manifest(store, "flowers", 1)), "label", 500
        ),
        "label",
        replace(SPEC, estimator="logistic_regression", params={"C": "0.001"}),
    )
    body = artifacts.dump_model(other.pipeline)
    store.put("artifacts/iris/other/model.skops", body)
    swapped = replace(
        version,
        artifact_uri="artifacts/iris/other/model.skops",
        artifact_sha256=artifacts.sha256(body),
    )
    found = reproduce(store, MODEL, swapped)
    assert found.prediction_mismatches > 0 and not found.matched
    assert "holdout predictions differ" in found.differences[-1]


def test_recorded_library_versions_that_changed_are_listed(store: LocalObjectStore) -> None:
    version = registered(store, since=None)
    old = replace(version, params={**version.params, "lib.numpy": "0.0.1"})
    found = reproduce(store, MODEL, old)
    assert found.matched  # a version change alone is reported, not a failure
    assert found.library_versions["numpy"].startswith("0.0.1 -> ")


def test_lineage_without_a_spec_cannot_be_reproduced() -> None:
    with pytest.raises(InvalidInput, match="no recorded spec"):
        spec_from_lineage({"code_version": "1"})
    spec, since = spec_from_lineage(
        {"estimator": "random_forest", "n_estimators": "5", "features": '["x"]', "seed": "0"}
    )
    assert spec.params == {"n_estimators": "5"} and since is None
