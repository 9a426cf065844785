"""Fleet runs through the executor: a fleet run fits the global model then queues one run per
partition with min_rows rows (once, even when redone), each partition run trains on its own rows
only and is compared with the global model, a partition column with too many values is refused
before any model exists, and a fleet episode queues one run per named partition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from registry_fake import FakeRegistry
from training_fleet_setup import fleet_executor, fleet_registry

from driftloop.services.training.adapters.registry import TrainingRegistry
from driftloop.services.training.core.executor import RunExecutor
from driftloop.services.training.core.fleet_runs import child_episode, group
from driftloop.services.training.core.runs import RunStore
from driftloop.services.training.core.training import Training
from driftloop.services.validation.core import curation
from driftloop.shared.errors import InvalidInput, TooLarge
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit

ROWS = {1: 300, 2: 250, 3: 200, 4: 40}
"""Rows per route: route 4 has fewer than min_rows and stays with the global model."""


def curate(store: LocalObjectStore) -> None:
    """Each route its own slope, so a per-route model beats the global one."""
    rng = np.random.default_rng(7)
    routes = np.concatenate([np.full(n, r) for r, n in ROWS.items()])
    rng.shuffle(routes)
    x = rng.normal(size=len(routes))
    y = routes * 3.0 * x + rng.normal(scale=0.1, size=len(routes))
    table = pa.table(
        {
            "route": routes,
            "x": x,
            "y": [repr(float(v)) for v in y],
            "_ingested_at": 1000.0 + np.arange(len(routes), dtype=float),
        }
    )
    curation.curate_batch(store, "trips", "b1", table, "schema-1")


def setup(tmp_path: Path, max_partitions: int = 100) -> tuple[RunStore, RunExecutor, FakeRegistry]:
    runs = RunStore(tmp_path / "runs.db")
    store = LocalObjectStore(tmp_path / "objects")
    curate(store)
    fake = fleet_registry()
    return runs, fleet_executor(runs, store, fake, max_partitions=max_partitions), fake


async def work_off(runs: RunStore, executor: RunExecutor) -> int:
    done = 0
    while (run := runs.claim_next()) is not None:
        await executor.execute(run)
        done += 1
    return done


async def test_a_fleet_run_trains_the_global_model_then_each_partition(tmp_path: Path) -> None:
    runs, executor, fake = setup(tmp_path)
    fleet_run = runs.queue("arrivals", "manual", reason="first")
    assert fleet_run is not None
    assert await work_off(runs, executor) == 4  # the fleet's run and routes 1, 2, 3
    done = {r.model: r for r in runs.list(limit=10)}
    assert set(done) == {"arrivals", "arrivals/route=1", "arrivals/route=2", "arrivals/route=3"}
    assert all(r.state == "succeeded" for r in done.values()), [r.error for r in done.values()]
    # its own rows only, a fifth held out to be compared with the global model
    assert done["arrivals/route=1"].training_rows == 240
    assert done["arrivals/route=3"].training_rows == 160
    assert done["arrivals/route=2"].correlation_id == fleet_run.correlation_id
    assert (
        f"partition of fleet run {fleet_run.run_id} (250 rows)" in done["arrivals/route=2"].reason
    )
    partitions = await fake.list_models(fleet="arrivals")
    assert [m.name for m in partitions] == [f"arrivals/route={r}" for r in (1, 2, 3)]
    # each partition's first candidate was compared with the global model, and beat it
    first = await fake.get_version("arrivals/route=1", "1")
    assert first.lineage.params["features"] == '["route", "x"]'
    global_mae = (await fake.get_version("arrivals", "1")).metrics["mae"]
    assert first.metrics["mae"] < global_mae / 3


async def test_a_redone_fleet_run_queues_its_partitions_once(tmp_path: Path) -> None:
    runs, executor, _ = setup(tmp_path)
    fleet_run = runs.queue("arrivals", "manual")
    assert fleet_run is not None
    claimed = runs.claim_next()
    assert claimed is not None
    await executor.execute(claimed)
    queued = [r.model for r in runs.list(limit=10) if r.state == "queued"]
    assert len(queued) == 3
    # the same run redone (a crash after the partitions were queued): nothing queued twice
    again = runs.get(fleet_run.run_id)
    assert again is not None
    await executor.execute(again)
    assert sorted(r.model for r in runs.list(limit=10) if r.state == "queued") == sorted(queued)


async def test_a_partition_column_with_too_many_values_is_refused_first(tmp_path: Path) -> None:
    runs, executor, fake = setup(tmp_path, max_partitions=3)
    fleet_run = runs.queue("arrivals", "manual")
    assert fleet_run is not None
    assert await work_off(runs, executor) == 1
    failed = runs.get(fleet_run.run_id)
    assert failed is not None and failed.state == "failed"
    assert "partition_by ['route'] has 4 distinct values" in failed.error
    assert "the limit is 3 (DRIFTLOOP_TRAINING_MAX_PARTITIONS)" in failed.error
    assert await fake.list_versions("arrivals") == []
    assert await fake.list_models(fleet="arrivals") == []


def test_grouping_puts_rows_without_a_partition_value_in_none() -> None:
    import pandas as pd

    frame = pd.DataFrame({"route": [1, 1.0, None, 2, "x y"], "v": range(5)})
    grouped = group(frame, ("route",), 10)
    assert {k: list(v) for k, v in grouped.groups.items()} == {
        "route=1": [0, 1],
        "route=2": [3],
        "route=x%20y": [4],
    }
    assert grouped.eligible(2) == ["route=1"]
    assert grouped.rows("route=9").empty


async def test_a_fleet_episode_queues_the_fleet_and_each_partition_once(tmp_path: Path) -> None:
    runs = RunStore(tmp_path / "runs.db")
    fake = fleet_registry()
    training = Training(runs, TrainingRegistry(fake), executor=None)  # type: ignore[arg-type]
    partitions = ("arrivals/route=1", "arrivals/route=2")
    for _ in range(2):  # the event redelivered
        await training.queue_drift("arrivals", "ep-9", "corr", "cause", 5.0, partitions=partitions)
    queued = runs.list(limit=10)
    assert sorted(r.model for r in queued) == ["arrivals", *partitions]
    by_model = {r.model: r for r in queued}
    assert by_model["arrivals/route=2"].episode_id == child_episode("ep-9", "arrivals/route=2")
    assert by_model["arrivals/route=1"].data_since == 5.0
    assert "fleet episode ep-9 of arrivals" in by_model["arrivals/route=1"].cause_detail
    with pytest.raises(InvalidInput, match="is not one of its partition models"):
        await training.queue_drift("arrivals", "ep-10", "c", "c", 5.0, partitions=("other/a=1",))


async def test_a_follow_up_of_an_open_fleet_episode_queues_only_its_new_partitions(
    tmp_path: Path,
) -> None:
    # monitoring grows an open fleet episode: partitions that drift later come as a follow-up
    # DriftDetected with the same episode id, listing only them
    runs = RunStore(tmp_path / "runs.db")
    fake = fleet_registry()
    training = Training(runs, TrainingRegistry(fake), executor=None)  # type: ignore[arg-type]
    first = await training.queue_drift(
        "arrivals", "ep-3", "corr", "cause", 5.0, partitions=("arrivals/route=1",)
    )
    follow_up = await training.queue_drift(
        "arrivals", "ep-3", "corr", "cause-2", 9.0, partitions=("arrivals/route=2",)
    )
    assert first is not None and follow_up is None  # the fleet's own run is queued once
    queued = runs.list(limit=10)
    assert sorted(r.model for r in queued) == ["arrivals", "arrivals/route=1", "arrivals/route=2"]
    joined = next(r for r in queued if r.model == "arrivals/route=2")
    assert joined.episode_id == child_episode("ep-3", "arrivals/route=2")
    assert joined.data_since == 9.0


def test_too_large_is_the_error_for_the_partition_limit() -> None:
    import pandas as pd

    with pytest.raises(TooLarge, match="has 3 distinct values"):
        group(pd.DataFrame({"r": [1, 2, 3]}), ("r",), 2)


def test_runs_are_claimed_round_robin_across_fleets_and_models(tmp_path: Path) -> None:
    runs = RunStore(tmp_path / "runs.db")
    for route in range(3):
        runs.queue(f"arrivals/route={route}", "manual")
    runs.queue("churn", "manual")
    runs.queue("arrivals", "manual")
    order = []
    while (run := runs.claim_next()) is not None:
        order.append(run.model)
    # the plain model waits for one fleet run only, not for the fleet's whole pass
    assert order == [
        "arrivals/route=0",
        "churn",
        "arrivals/route=1",
        "arrivals/route=2",
        "arrivals",
    ]
