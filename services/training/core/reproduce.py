"""Reproduce a registered version: refit with the spec and seed its lineage recorded, on the
exact rows its pinned manifest held, and compare metrics and holdout predictions."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from driftloop.services.training.core import tasks, trainer
from driftloop.services.training.core.domain import (
    ModelInfo,
    ModelSpec,
    RegisteredVersion,
    SearchSpec,
)
from driftloop.services.training.core.training import RegistryPort
from driftloop.shared import artifacts, manifest
from driftloop.shared.errors import InvalidInput
from driftloop.shared.objectstore import ObjectStore

METRIC_TOLERANCE = 1e-9
"""Classification metrics are fractions of holdout rows: anything beyond float noise is a real
difference. A regressor's metrics are on the target's scale: there the tolerance is relative
(|a - b| <= 1e-9 * max(1, |a|, |b|))."""
PREDICTION_RTOL = 1e-9
"""A regressor's reproduced prediction matches when |a - b| <= PREDICTION_ATOL + PREDICTION_RTOL
* |b| (numpy.isclose): refitting with the same seed on the same rows repeats the arithmetic,
so only summation-order noise (~1e-15 relative) may differ; labels must be equal."""
PREDICTION_ATOL = 1e-9
_META = {
    "estimator",
    "estimator_params",
    "features",
    "window_rows",
    "holdout_fraction",
    "min_rows",
    "seed",
    "evaluation",
    "fit_seconds",
    "trained_at",
    "data_since",
    "slice_columns",
    "search",
    "search.best_params",
    "search.best_cv_score",
    "search.candidates",
    "search.method",
    "task",
}


@dataclass(frozen=True)
class Reproduction:
    matched: bool
    recorded_metrics: dict[str, float]
    reproduced_metrics: dict[str, float]
    holdout_rows: int
    prediction_mismatches: int
    differences: list[str]
    manifest_version: int
    library_versions: dict[str, str] = field(default_factory=dict)
    """Libraries whose version differs now from training time: "recorded -> now"."""
    spec_version: int = 0
    """The registry spec version retrained with (0: the spec recorded in the lineage)."""


def spec_from_lineage(params: dict[str, str]) -> tuple[ModelSpec, float | None]:
    """The spec a version was trained with, and the start of its data window (drift runs)."""
    if "estimator" not in params or "features" not in params:
        raise InvalidInput("the version's lineage has no recorded spec: it cannot be reproduced")
    if "estimator_params" in params:
        estimator_params = json.loads(params["estimator_params"])
    else:  # versions trained before estimator_params was recorded
        estimator_params = {
            k: v for k, v in params.items() if k not in _META and not k.startswith("lib.")
        }
    spec = ModelSpec(
        features=tuple(json.loads(params["features"])),
        estimator=params["estimator"],
        params=estimator_params,
        window_rows=int(params.get("window_rows", "2000")),
        holdout_fraction=float(params.get("holdout_fraction", "0.2")),
        min_rows=int(params.get("min_rows", "1")),
    )
    if "task" in params:
        spec = replace(spec, task=params["task"])
    if "slice_columns" in params:
        spec = replace(spec, slice_columns=tuple(json.loads(params["slice_columns"])))
    if "search" in params:
        spec = replace(spec, search=SearchSpec(**json.loads(params["search"])))
    since = float(params["data_since"]) if "data_since" in params else None
    return spec, since


def reproduce(
    store: ObjectStore,
    model: ModelInfo,
    version: RegisteredVersion,
    spec_version: ModelSpec | None = None,
) -> Reproduction:
    """Retrain `version`; with `spec_version` (the registry's spec version the run recorded),
    train with that spec, on the feature columns the lineage resolved from the data."""
    if version.manifest_version <= 0:
        raise InvalidInput(f"version {version.version} has no pinned manifest in its lineage")
    spec, since = spec_from_lineage(version.params)
    if spec_version is not None:
        spec = replace(spec_version, features=spec.features)
    pinned = manifest.read_manifest(store, model.dataset, version.manifest_version)
    frame = manifest.read_snapshot(store, pinned, since=since)
    window = trainer.select_window(
        frame,
        model.target,
        spec.window_rows,
        spec.task,
        partition_by=() if model.fleet else spec.partition_by,
    )
    cross = version.params.get("evaluation") == trainer.CROSS_VALIDATED
    again = trainer.train_candidate(model.name, window, model.target, spec, cross_validate=cross)
    holdout = window if cross else trainer.split_holdout(window, spec.holdout_fraction)[1]
    registered = artifacts.load_model(store.get(version.artifact_uri), version.artifact_sha256)
    regression = tasks.is_regression(spec.task)
    mismatches = _mismatches(registered, again.pipeline, holdout, regression)
    differences = _metric_differences(version.metrics, again.metrics, regression)
    if mismatches:
        differences.append(
            f"{mismatches} of {len(holdout)} holdout predictions differ from the registered model"
        )
    return Reproduction(
        matched=not differences,
        recorded_metrics=dict(version.metrics),
        reproduced_metrics=again.metrics,
        holdout_rows=len(holdout),
        prediction_mismatches=mismatches,
        differences=differences,
        manifest_version=pinned.version,
        library_versions=_library_changes(version.params),
        spec_version=version.spec_version if spec_version is not None else 0,
    )


def _mismatches(registered: Any, retrained: Any, holdout: pd.DataFrame, numbers: bool) -> int:
    """Holdout rows the two models predict differently: labels compared as strings, numbers
    within PREDICTION_RTOL/PREDICTION_ATOL."""
    features = [str(c) for c in registered.feature_names_in_]
    if numbers:
        a = np.asarray(registered.predict(holdout[features]), dtype=float)
        b = np.asarray(retrained.predict(holdout[features]), dtype=float)
        return int((~np.isclose(a, b, rtol=PREDICTION_RTOL, atol=PREDICTION_ATOL)).sum())
    before = pd.Series(registered.predict(holdout[features])).astype(str)
    after = pd.Series(retrained.predict(holdout[features])).astype(str)
    return int((before != after).sum())


def _metric_differences(
    recorded: dict[str, float], now: dict[str, float], relative: bool = False
) -> list[str]:
    out = []
    for name in sorted(set(recorded) | set(now)):
        a, b = recorded.get(name), now.get(name)
        scale = max(1.0, abs(a), abs(b)) if relative and a is not None and b is not None else 1.0
        if a is None or b is None or abs(a - b) > METRIC_TOLERANCE * scale:
            out.append(f"{name}: recorded {_fmt(a)}, reproduced {_fmt(b)}")
    return out


def _library_changes(params: dict[str, str]) -> dict[str, str]:
    now = trainer.library_versions()
    recorded = {k.removeprefix("lib."): v for k, v in params.items() if k.startswith("lib.")}
    return {
        name: f"{was} -> {now.get(name, 'absent')}"
        for name, was in sorted(recorded.items())
        if now.get(name) != was
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


class Reproducer:
    """Reproduce a version named by the registry, off the event loop."""

    def __init__(self, store: ObjectStore, registry: RegistryPort) -> None:
        self._store = store
        self._registry = registry

    async def run(self, model: str, version: str) -> Reproduction:
        if not model or not version:
            raise InvalidInput("name the version to reproduce as MODEL and VERSION")
        info = await self._registry.get_model(model)
        registered = await self._registry.get_version(model, version)
        spec = None
        if registered.spec_version > 0:
            spec = (await self._registry.get_spec(model, registered.spec_version)).spec
        return await asyncio.to_thread(reproduce, self._store, info, registered, spec)
