"""Runs waiting for data at fleet scale (#18): after a run's first poll, its next polls ask the
registry nothing while the dataset has no new manifest version, one poll puts back every run
waiting on the same data, a new version recounts the partitions in memory and wakes the runs
whose rows are there, a wait past its deadline gets the full poll, and a poll that only
waited is not counted as a finished run."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import REGISTRY
from registry_fake import FakeRegistry

from driftloop.services.training.adapters.registry import TrainingRegistry
from driftloop.services.training.core.domain import Run
from driftloop.services.training.core.executor import RunExecutor
from driftloop.services.training.core.pinning import DataWait
from driftloop.services.training.core.runs import RunStore
from driftloop.services.validation.core import curation
from driftloop.shared import registry_types as reg
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit

SPEC = reg.TrainingSpec(
    estimator="ridge",
    window_rows=120,  # a drift run's first wait: window_rows post-drift rows of its partition
    holdout_fraction=0.2,
    min_rows=100,
    task="regression",
    partition_by=("route",),
    policy=reg.PromotionPolicy(metric="mae"),
)
DRIFT_AT = 5000.0
WANTED = "120 rows after the drift"


def curate(store: LocalObjectStore, batch: str, rows: dict[int, int], start: float) -> None:
    rng = np.random.default_rng(len(batch))
    routes = np.concatenate([np.full(n, r) for r, n in rows.items()])
    x = rng.normal(size=len(routes))
    table = pa.table(
        {
            "route": routes,
            "x": x,
            "y": routes * 3.0 * x + rng.normal(scale=0.1, size=len(routes)),
            "_ingested_at": start + np.arange(len(routes), dtype=float) / len(routes),
        }
    )
    curation.curate_batch(store, "trips", batch, table, "schema-1")


def setup(
    tmp_path: Path, wait: DataWait | None = None
) -> tuple[RunStore, RunExecutor, LocalObjectStore, FakeRegistry]:
    runs = RunStore(tmp_path / "runs.db")
    store = LocalObjectStore(tmp_path / "objects")
    curate(store, "b1", {1: 200, 2: 200}, 1000.0)
    fake = FakeRegistry()
    fake.put_model(reg.Model("arrivals", "trips", "y", SPEC, spec_version=1))
    wait = wait or DataWait(max_wait_seconds=3600.0, poll_seconds=60.0)
    executor = RunExecutor(runs, store, TrainingRegistry(fake), wait=wait)  # type: ignore[arg-type]
    return runs, executor, store, fake


def drift_runs(runs: RunStore, *routes: int) -> list[Run]:
    queued = []
    for route in routes:
        run = runs.queue(
            f"arrivals/route={route}", "drift", episode_id=f"ep-{route}", data_since=DRIFT_AT
        )
        assert run is not None
        queued.append(run)
    return queued


async def poll_next(runs: RunStore, executor: RunExecutor) -> Run:
    claimed = runs.claim_next()
    assert claimed is not None
    return await poll(runs, executor, claimed)


async def poll(runs: RunStore, executor: RunExecutor, run: Run) -> Run:
    """Execute `run` (its poll is due: the tests' polls are a minute apart)."""
    await executor.execute(replace(run, state="running"))
    after = runs.get(run.run_id)
    assert after is not None
    return after


async def test_waiting_runs_poll_without_the_registry_until_rows_arrive(tmp_path: Path) -> None:
    runs, executor, store, fake = setup(tmp_path)
    one, two = drift_runs(runs, 1, 2)
    for _ in range(2):  # each run's first poll reads its model from the registry
        waited = await poll_next(runs, executor)
        assert waited.state == "queued" and waited.progress == f"waiting for data (0/{WANTED})"
    asked = sum(fake.calls.values())
    assert asked > 0 and len(executor._data.waiting) == 2

    first_due = runs.get(two.run_id)
    waited = await poll(runs, executor, runs.get(one.run_id))  # type: ignore[arg-type]
    assert waited.state == "queued"  # no new manifest version
    assert sum(fake.calls.values()) == asked
    second_due = runs.get(two.run_id)  # put back by run one's poll: it waits on the same data
    assert first_due is not None and second_due is not None
    assert second_due.state == "queued" and second_due.not_before is not None
    assert first_due.not_before is not None and second_due.not_before > first_due.not_before

    curate(store, "b2", {1: 130, 2: 40}, DRIFT_AT + 10)  # enough for route 1 only
    await poll(runs, executor, second_due)  # counted in memory, still no registry call
    assert sum(fake.calls.values()) == asked
    two_now = runs.get(two.run_id)
    assert two_now is not None and two_now.progress == f"waiting for data (40/{WANTED})"
    assert executor._data.waiting.get(one.run_id) is None  # woken: its rows are there

    trained = await poll_next(runs, executor)  # woken: due now, the other one in a minute
    assert trained.run_id == one.run_id and trained.state == "succeeded", trained.error
    assert trained.training_rows == 120  # window_rows of its 130 post-drift rows, read then
    assert runs.get(two.run_id).state == "queued"  # type: ignore[union-attr]


async def test_a_wait_past_its_deadline_gets_the_full_poll(tmp_path: Path) -> None:
    runs, executor, _, fake = setup(tmp_path)
    (run,) = drift_runs(runs, 1)
    waited = await poll_next(runs, executor)
    known = executor._data.waiting.get(run.run_id)
    assert known is not None and waited.wait_started_at is not None
    over = replace(known, wait=replace(known.wait, deadline=time.time() - 1))
    executor._data.waiting.add(over)
    assert not executor._data.recheck(replace(waited, state="running"))
    assert executor._data.waiting.get(run.run_id) is None
    asked = sum(fake.calls.values())
    await poll(runs, executor, waited)  # the full poll: the registry is asked again
    assert sum(fake.calls.values()) > asked


async def test_a_run_that_only_waited_is_not_counted_as_finished(tmp_path: Path) -> None:
    runs, executor, _, _ = setup(tmp_path)
    (run,) = drift_runs(runs, 1)
    labels = {"model": "arrivals/route=1", "trigger": "drift", "outcome": "succeeded"}
    before = REGISTRY.get_sample_value("driftloop_training_run_seconds_count", labels) or 0.0
    await poll_next(runs, executor)
    await poll(runs, executor, run)
    after = REGISTRY.get_sample_value("driftloop_training_run_seconds_count", labels) or 0.0
    assert after == before


def test_deferring_many_leaves_alone_runs_held_elsewhere_or_ended(tmp_path: Path) -> None:
    runs = RunStore(tmp_path / "runs.db")
    mine, other, ended, queued = (runs.queue(f"m{i}", "manual") for i in range(4))
    assert mine and other and ended and queued
    for _ in range(3):
        assert runs.claim_next() is not None  # mine, other and ended are running
    runs.fail(ended.run_id, "boom")
    due = time.time() + 60
    left = runs.defer_many(
        mine.run_id,
        [(r.run_id, due, "waiting", 1.0) for r in (mine, other, ended, queued)],
    )
    assert sorted(left) == sorted([other.run_id, ended.run_id])
    states = {r.run_id: r for r in runs.list(limit=10)}
    assert states[mine.run_id].state == "queued" and states[mine.run_id].not_before == due
    assert states[queued.run_id].progress == "waiting" and states[queued.run_id].not_before == due
    assert states[other.run_id].state == "running" and states[ended.run_id].state == "failed"
    assert states[mine.run_id].wait_started_at == 1.0
