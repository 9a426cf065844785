"""Champions loaded once per artifact (#18): the loaded models are kept by SHA-256 within a bound
of artifact bytes, a wrong hash is refused and not kept, and a fleet's partition runs compare
with the global model that the fleet run's servable check loaded, without reading it again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from registry_fake import FakeRegistry
from sklearn.linear_model import LinearRegression

from driftloop.services.training.adapters.registry import TrainingRegistry
from driftloop.services.training.core import trainer
from driftloop.services.training.core.champions import LoadedModels
from driftloop.services.training.core.executor import RunExecutor
from driftloop.services.training.core.runs import RunStore
from driftloop.services.validation.core import curation
from driftloop.shared import artifacts
from driftloop.shared import registry_types as reg
from driftloop.shared.errors import ArtifactRejected
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit


def artifact(slope: float) -> tuple[str, bytes]:
    x = np.arange(10.0).reshape(-1, 1)
    body = artifacts.dump_model(LinearRegression().fit(x, slope * x.ravel()))
    return artifacts.sha256(body), body


class Reads:
    """Counts the artifact reads a cache makes."""

    def __init__(self, body: bytes) -> None:
        self.body, self.count = body, 0

    def __call__(self) -> bytes:
        self.count += 1
        return self.body


def test_a_model_is_loaded_once_per_artifact() -> None:
    loaded = LoadedModels()
    sha, body = artifact(2.0)
    read = Reads(body)
    first = loaded.load(sha, read)
    assert loaded.load(sha, read) is first
    assert read.count == 1 and loaded.loads == 1
    assert first.predict(np.array([[3.0]]))[0] == pytest.approx(6.0)


def test_loaded_models_are_bounded_by_artifact_bytes() -> None:
    (sha1, body1), (sha2, body2), (sha3, body3) = (artifact(s) for s in (1.0, 2.0, 3.0))
    loaded = LoadedModels(max_bytes=len(body1) + len(body2))
    reads = {sha: Reads(body) for sha, body in ((sha1, body1), (sha2, body2), (sha3, body3))}
    loaded.load(sha1, reads[sha1])
    loaded.load(sha2, reads[sha2])
    loaded.load(sha1, reads[sha1])  # used last: sha2 is now the least recently used
    loaded.load(sha3, reads[sha3])
    assert len(loaded) == 2
    loaded.load(sha1, reads[sha1])
    loaded.load(sha2, reads[sha2])
    assert (reads[sha1].count, reads[sha2].count, reads[sha3].count) == (1, 2, 1)
    small = LoadedModels(max_bytes=len(body1) - 1)
    small.load(sha1, Reads(body1))
    assert len(small) == 0  # larger than the whole bound: loaded, not kept


def test_a_wrong_hash_is_refused_and_not_kept() -> None:
    loaded = LoadedModels()
    sha, _ = artifact(1.0)
    _, other = artifact(5.0)
    with pytest.raises(ArtifactRejected, match="hash mismatch"):
        loaded.load(sha, Reads(other))
    assert len(loaded) == 0


def test_library_versions_are_a_fresh_copy_each_time() -> None:
    found = trainer.library_versions()
    found["numpy"] = "changed"
    assert trainer.library_versions()["numpy"] != "changed"
    assert trainer.code_version() == trainer.code_version()


class CountingStore(LocalObjectStore):
    """A real local store that counts reads of model artifacts."""

    artifact_reads = 0

    def get(self, key: str) -> bytes:
        if key.endswith("model.skops"):
            self.artifact_reads += 1
        return super().get(key)


async def test_partition_runs_use_the_global_model_the_fleet_run_loaded(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "objects")
    rng = np.random.default_rng(3)
    routes = np.repeat([1, 2, 3], 150)
    x = rng.normal(size=len(routes))
    table = pa.table(
        {
            "route": routes,
            "x": x,
            "y": routes * 2.0 * x + rng.normal(scale=0.1, size=len(routes)),
            "_ingested_at": 1000.0 + np.arange(len(routes), dtype=float),
        }
    )
    curation.curate_batch(store, "trips", "b1", table, "schema-1")
    spec = reg.TrainingSpec(
        estimator="ridge",
        window_rows=1000,
        min_rows=100,
        task="regression",
        partition_by=("route",),
        policy=reg.PromotionPolicy(metric="mae"),
    )
    fake = FakeRegistry()
    fake.put_model(reg.Model("arrivals", "trips", "y", spec, spec_version=1))
    runs = RunStore(tmp_path / "runs.db")
    executor = RunExecutor(runs, store, TrainingRegistry(fake))  # type: ignore[arg-type]
    assert runs.queue("arrivals", "manual") is not None
    while (run := runs.claim_next()) is not None:
        await executor.execute(run)
    done = {r.model: r for r in runs.list(limit=10)}
    assert len(done) == 4 and all(r.state == "succeeded" for r in done.values())
    versions = await fake.list_versions("arrivals/route=2")
    assert versions[0].lineage.parent_version == "1"  # compared with the global model
    assert store.artifact_reads == 0 and executor.loaded.loads == 0
