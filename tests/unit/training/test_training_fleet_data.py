"""The data of fleet runs (#18): an empty post-drift snapshot groups into no partitions, the
fleet's rows are read once per dataset and only new files after that, a drift run whose wait
ends short trains on its post-drift rows only (or keeps waiting), and a partition whose first
comparison with the global model was inconclusive is tried again once its rows have doubled."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from registry_fake import FakeRegistry
from training_fleet_setup import SPEC, fleet_executor, fleet_registry

from driftloop.services.training.core import trainer
from driftloop.services.training.core.domain import Registration, Run
from driftloop.services.training.core.drift_wait import usable_rows
from driftloop.services.training.core.executor import RunExecutor
from driftloop.services.training.core.fleet_runs import group
from driftloop.services.training.core.fleet_snapshot import SnapshotCache
from driftloop.services.training.core.pinning import DataWait
from driftloop.services.training.core.runs import RunStore
from driftloop.services.validation.core import curation
from driftloop.shared import manifest
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit

PLAIN = replace(SPEC, partition_by=())
DRIFT_AT = 5000.0


class CountingStore(LocalObjectStore):
    """A real local store that counts reads of curated files."""

    curated_reads = 0

    def get(self, key: str) -> bytes:
        if key.startswith("curated/"):
            self.curated_reads += 1
        return super().get(key)


def curate(store: LocalObjectStore, batch: str, rows: dict[int, int], start: float) -> None:
    """`rows` per route; after DRIFT_AT each route's slope flips (the new regime)."""
    rng = np.random.default_rng(len(batch) + int(start))
    routes = np.concatenate([np.full(n, r) for r, n in rows.items()])
    x = rng.normal(size=len(routes))
    slope = np.where(start >= DRIFT_AT, -3.0, 3.0) * routes
    y = slope * x + rng.normal(scale=0.1, size=len(routes))
    table = pa.table(
        {
            "route": routes,
            "x": x,
            "y": [repr(float(v)) for v in y],
            "_ingested_at": start + np.arange(len(routes), dtype=float) / len(routes),
        }
    )
    curation.curate_batch(store, "trips", batch, table, "schema-1")


def setup(
    tmp_path: Path, wait: DataWait | None = None
) -> tuple[RunStore, RunExecutor, CountingStore, FakeRegistry]:
    runs = RunStore(tmp_path / "runs.db")
    store = CountingStore(tmp_path / "objects")
    curate(store, "b1", {1: 300, 2: 250}, 1000.0)
    fake = fleet_registry(plain=PLAIN)
    return runs, fleet_executor(runs, store, fake, wait=wait), store, fake


def drift_run(runs: RunStore, model: str, episode: str, since: float = DRIFT_AT) -> Run:
    run = runs.queue(model, "drift", episode_id=episode, data_since=since, correlation_id="c")
    assert run is not None
    claimed = runs.claim_next()
    assert claimed is not None and claimed.run_id == run.run_id
    return claimed


def test_an_empty_frame_groups_into_no_partitions() -> None:
    assert group(pd.DataFrame(), ("route",), 10).groups == {}
    with pytest.raises(Exception, match="partition column 'route' is not in the data"):
        group(pd.DataFrame({"x": [1]}), ("route",), 10)  # rows without the column still fail


async def test_a_partition_drift_run_with_no_rows_since_the_drift_waits(tmp_path: Path) -> None:
    wait = DataWait(max_wait_seconds=0.0, retry_wait_seconds=600.0)
    runs, executor, _, _ = setup(tmp_path, wait)
    run = drift_run(runs, "arrivals/route=1", "ep-1", since=10**9)  # nothing since
    await executor.execute(run)
    after = runs.get(run.run_id)
    assert after is not None and after.state == "queued", after.error
    assert after.progress.startswith("waiting for data (0/50 usable rows after the drift")


async def test_partition_runs_read_each_curated_file_once(tmp_path: Path) -> None:
    runs, executor, store, _ = setup(tmp_path, DataWait(max_wait_seconds=0.0))
    curate(store, "b2", {1: 80, 2: 80}, DRIFT_AT + 10)
    await executor.execute(drift_run(runs, "arrivals/route=1", "ep-1"))
    assert store.curated_reads == 2  # b1 and b2
    curate(store, "b3", {1: 10, 2: 10}, DRIFT_AT + 20)  # a new manifest version meanwhile
    await executor.execute(drift_run(runs, "arrivals/route=2", "ep-2"))
    assert store.curated_reads == 3  # only b3 was new
    done = {r.model: r for r in runs.list(limit=10)}
    assert done["arrivals/route=1"].state == "succeeded", done["arrivals/route=1"].error
    assert done["arrivals/route=1"].training_rows == 80  # its post-drift rows only
    assert done["arrivals/route=2"].training_rows == 90


def test_a_view_sees_its_manifest_version_only_and_memory_is_bounded(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    curate(store, "b1", {1: 30, 2: 20}, 1000.0)
    first = manifest.latest_manifest(store, "trips")
    curate(store, "b2", {1: 5, 3: 7}, 2000.0)
    second = manifest.latest_manifest(store, "trips")
    assert first is not None and second is not None
    cache = SnapshotCache()
    read_all = manifest.read_snapshot(store, second)

    def read(files: list[manifest.ManifestFile]) -> tuple[pd.DataFrame, np.ndarray]:
        frames = [
            manifest.read_snapshot(store, second.model_copy(update={"files": [f]})) for f in files
        ]
        seq = np.concatenate([np.full(len(f), i) for i, f in enumerate(frames)])
        return pd.concat(frames, ignore_index=True), seq

    newer = cache.view(second, ("route",), read, 100)
    older = cache.view(first, ("route",), read, 100)
    assert cache.files_read == 2
    assert newer.count("route=1") == 35 and older.count("route=1") == 30
    assert older.count("route=3") == 0 and newer.eligible(7) == ["route=1", "route=2", "route=3"]
    assert newer.count("route=1", since=2000.0) == 5
    expected = read_all[read_all["route"] == 1].reset_index(drop=True)
    pd.testing.assert_frame_equal(newer.rows("route=1"), expected)
    assert len(newer.frame()) == len(read_all) and len(older.frame(since=2000.0)) == 0
    tiny = SnapshotCache(max_bytes=1)
    tiny.view(second, ("route",), read, 100)
    tiny.view(second, ("route",), read, 100)
    assert tiny.files_read == 4  # nothing kept over the bound: read again


@pytest.mark.parametrize("model", ["arrivals/route=1", "plain"])
async def test_a_short_wait_trains_on_post_drift_rows_only_and_says_so(
    tmp_path: Path, model: str
) -> None:
    runs, executor, store, _ = setup(tmp_path, DataWait(max_wait_seconds=0.0))
    curate(store, "b2", {1: 60}, DRIFT_AT + 10)  # fewer than min_rows 100, at least 50
    run = drift_run(runs, model, "ep-1")
    await executor.execute(run)
    done = runs.get(run.run_id)
    assert done is not None and done.state == "succeeded", done.error
    assert done.training_rows == 60  # not the 300 mostly pre-drift rows of the window
    assert "trained on the 60 rows ingested after the drift only" in done.reason
    assert "at least 50 post-drift rows" in done.reason


async def test_too_few_post_drift_rows_wait_then_fail_never_training_on_old_rows(
    tmp_path: Path,
) -> None:
    runs, executor, store, fake = setup(tmp_path, DataWait(max_wait_seconds=0.0))
    curate(store, "b2", {1: 20}, DRIFT_AT + 10)
    run = drift_run(runs, "arrivals/route=1", "ep-1")
    await executor.execute(run)
    waiting = runs.get(run.run_id)
    assert waiting is not None and waiting.state == "queued"
    assert "20/50 usable rows after the drift" in waiting.progress
    over = fleet_executor(
        runs, store, fake, wait=DataWait(max_wait_seconds=0.0, retry_wait_seconds=0.0)
    )
    await over.execute(replace(waiting, wait_started_at=time.time() - 1))
    failed = runs.get(run.run_id)
    assert failed is not None and failed.state == "failed"
    assert "only 20 rows arrived after the drift" in failed.error
    assert "never on the pre-drift rows" in failed.error
    assert await fake.list_versions("plain") == []


def test_usable_rows_say_why() -> None:
    from driftloop.services.training.core.domain import ModelSpec

    rows, why = usable_rows(replace(ModelSpec(), min_rows=1000, task="regression"))
    assert rows == 250 and "a quarter of min_rows 1000" in why and "mae" in why
    assert usable_rows(replace(ModelSpec(), min_rows=20))[0] == 20  # never above min_rows


async def test_an_inconclusive_partition_runs_again_once_its_rows_doubled(
    tmp_path: Path,
) -> None:
    runs, executor, store, _ = setup(tmp_path)
    first = runs.queue("arrivals/route=2", "auto", correlation_id="c")
    assert first is not None
    outcome = Registration("1", False, "inconclusive", {}, "inconclusive", 0, "")
    model = await executor._model_and_spec(first)
    again = executor._requeue_when_grown(first, model[0], outcome, 250)
    assert again is not None and again.wait_rows == 500 and again.attempt == 2
    assert "inconclusive against the fleet's global model on 250 rows" in again.reason
    assert executor._requeue_when_grown(first, model[0], outcome, 250) is None  # once
    rejected = Registration("1", False, "no", {}, "rejected", 0, "")
    assert executor._requeue_when_grown(again, model[0], rejected, 250) is None
    claimed = runs.claim_next()
    assert claimed is not None and claimed.run_id == first.run_id  # queued before the retry
    claimed = runs.claim_next()
    assert claimed is not None and claimed.run_id == again.run_id
    await executor.execute(claimed)
    waiting = runs.get(again.run_id)
    assert waiting is not None and waiting.state == "queued"
    assert waiting.progress == "waiting for data (250/500 rows of the partition)"
    curate(store, "b2", {2: 250}, 2000.0)
    await executor.execute(replace(waiting, state="running"))
    done = runs.get(again.run_id)
    assert done is not None and done.state == "succeeded", done.error
    assert done.training_rows == 500  # no global model yet: cross-validated on every row
    assert "trained on the partition's 500 rows (500 waited for)" in done.reason


def test_a_fleets_global_model_takes_each_partitions_window() -> None:
    # a fleet-wide window of window_rows held 0.4 rows per route of a 1,000-route fleet
    frame = pd.DataFrame(
        {
            "route": ["a", "b"] * 6 + ["c"],
            "x": range(13),
            "y": [float(v) for v in range(13)],
        }
    )
    window = trainer.select_window(frame, "y", 2, "regression", partition_by=("route",))
    assert window["x"].tolist() == [8, 9, 10, 11, 12]  # 2 per route, in ingestion order
    assert len(trainer.select_window(frame, "y", 2, "regression")) == 2
