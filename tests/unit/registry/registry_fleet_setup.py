"""The fleet the registry unit tests share (test_registry_fleets, test_registry_listing): a
registry on a real SQLite file holding `arrivals`, a regressor partitioned by route_id."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from driftloop.services.registry.core.domain import Candidate, Lineage, TrainingSpec
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.store import RegistryStore
from driftloop.shared import fleet

SHA = "cd" * 32
FLEET_YAML = """
dataset: trips
target: delay_s
task: regression
estimator: ridge
partition_by: [route_id]
"""


@contextmanager
def fleet_registry(
    tmp_path: Path, max_partitions: int = fleet.DEFAULT_MAX_PARTITIONS
) -> Iterator[Registry]:
    """A registry in `tmp_path` with the fleet `arrivals` (FLEET_YAML); its store closed after."""
    store = RegistryStore(tmp_path / "registry.db")
    try:
        registry = Registry(store, max_partitions=max_partitions)
        registry.create_model("arrivals", "", "", TrainingSpec(), spec_yaml=FLEET_YAML)
        yield registry
    finally:
        store.close()


def candidate(
    model: str, run_id: str, mae: float, champion: str = "", champ: float = 30.0
) -> Candidate:
    """A candidate of `model` with MAE `mae`; against version `champion` of MAE `champ` if any."""
    return Candidate(
        model=model,
        run_id=run_id,
        artifact_uri=f"artifacts/{model}/{run_id}/model.skops",
        artifact_sha256=SHA,
        profile_uri=f"artifacts/{model}/{run_id}/profile.json",
        metrics={"mae": mae, "rmse": mae * 1.3, "r2": 0.5},
        champion_metrics={"mae": champ, "rmse": champ * 1.3, "r2": 0.4} if champion else {},
        champion_version=champion,
        lineage=Lineage(run_id=run_id, trigger="manual"),
    )
