"""The fleet the training unit tests share (test_training_fleet_runs, test_training_fleet_data):
`arrivals`, a ridge regressor of trips' `y` partitioned by route, held by a fake registry."""

from __future__ import annotations

from typing import Any

from registry_fake import FakeRegistry

from driftloop.services.training.adapters.registry import TrainingRegistry
from driftloop.services.training.core.executor import RunExecutor
from driftloop.services.training.core.runs import RunStore
from driftloop.shared import registry_types as reg
from driftloop.shared.objectstore import LocalObjectStore

SPEC = reg.TrainingSpec(
    estimator="ridge",
    window_rows=5000,
    holdout_fraction=0.2,
    min_rows=100,
    task="regression",
    partition_by=("route",),
    policy=reg.PromotionPolicy(metric="mae"),
)


def fleet_registry(**more: reg.TrainingSpec) -> FakeRegistry:
    """A fake registry holding the fleet `arrivals` (SPEC) and a model of each spec in `more`,
    by its name, all of trips' `y`."""
    fake = FakeRegistry()
    for name, spec in {"arrivals": SPEC, **more}.items():
        fake.put_model(reg.Model(name, "trips", "y", spec, spec_version=1))
    return fake


def fleet_executor(
    runs: RunStore, store: LocalObjectStore, fake: FakeRegistry, **options: Any
) -> RunExecutor:
    """A run executor reading `store` that sees `fake` through training's registry adapter."""
    return RunExecutor(runs, store, TrainingRegistry(fake), **options)  # type: ignore[arg-type]
