"""Training's RegistryPort over the registry fake (adapters/registry.py): the library's records
map to training's domain types and back, and errors pass through unchanged, so a refused token
fails a run instead of putting it back in the queue."""

from __future__ import annotations

import pytest
from registry_fake import FakeRegistry

from driftloop.services.training.adapters.registry import TrainingRegistry
from driftloop.services.training.core.domain import (
    CandidateLineage,
    CandidateVersion,
    DataFileRef,
    SliceScore,
)
from driftloop.shared import registry_types as reg
from driftloop.shared.errors import NotFound, PermissionDenied, Unavailable

pytestmark = pytest.mark.unit
SHA = "ab" * 32


def candidate(run_id: str = "run-1", accuracy: float = 0.9) -> CandidateVersion:
    lineage = CandidateLineage(
        run_id=run_id,
        manifest_version=3,
        manifest_key="manifests/d/3.json",
        files=(DataFileRef("curated/d/a.parquet", "cd" * 32, 100),),
        params={"C": "1.0"},
        code_version="0.1",
        causing_event_id="ev-1",
        correlation_id="corr-1",
        episode_id="ep-1",
        parent_version="",
        trigger="drift",
        training_rows=100,
        spec_version=1,
        spec_sha256="ef" * 32,
    )
    return CandidateVersion(
        model="m",
        run_id=run_id,
        artifact_uri=f"artifacts/m/{run_id}/model.skops",
        artifact_sha256=SHA,
        profile_uri=f"artifacts/m/{run_id}/profile.json",
        metrics={"accuracy": accuracy},
        champion_metrics={},
        champion_version="",
        lineage=lineage,
        correlation_id="corr-1",
        causation_id="ev-1",
        slice_metrics=(SliceScore("color", "red", 40, {"accuracy": 0.8}),),
    )


def port(fake: FakeRegistry) -> TrainingRegistry:
    search = reg.SearchSpec(param_grid={"C": "[0.1, 1]"})
    spec = reg.TrainingSpec(features=("x",), search=search, schedule_seconds=60)
    fake.put_model(reg.Model("m", "d", "label", spec, spec_version=1))
    return TrainingRegistry(fake)  # type: ignore[arg-type]


async def test_models_and_specs_map_to_training_types_with_its_defaults() -> None:
    registry = port(FakeRegistry())
    info = await registry.get_model("m")
    assert (info.name, info.dataset, info.target, info.spec.features) == ("m", "d", "label", ("x",))
    assert info.spec.search.cv == 3 and info.spec.search.scoring == "accuracy"
    assert info.spec.schedule_seconds == 60
    assert [m.name for m in await registry.list_models()] == ["m"]
    spec = await registry.get_spec("m")
    assert spec.number == 1 and spec.spec.search.param_grid == {"C": "[0.1, 1]"}
    with pytest.raises(NotFound):
        await registry.get_model("nobody")


async def test_register_then_find_the_run_the_champion_and_the_version() -> None:
    registry = port(FakeRegistry())
    assert await registry.production("m") is None
    assert await registry.find_run("m", "run-1") is None
    done = await registry.register(candidate())
    assert (done.version, done.promoted, done.metrics) == ("1", True, {"accuracy": 0.9})
    again = await registry.find_run("m", "run-1")
    assert again is not None and again.version == "1" and again.promoted
    champion = await registry.production("m")
    assert champion is not None and (champion.version, champion.artifact_sha256) == ("1", SHA)
    version = await registry.get_version("m", "1")
    assert (version.run_id, version.manifest_version, version.params) == ("run-1", 3, {"C": "1.0"})
    assert version.spec_version == 1


async def test_errors_pass_through_a_refused_token_is_not_unavailable() -> None:
    fake = FakeRegistry(token="right", presented="wrong")
    registry = port(fake)
    with pytest.raises(PermissionDenied) as refused:
        await registry.register(candidate())
    assert not isinstance(refused.value, Unavailable)
    assert fake.calls["RegisterVersion"] == 1
    fake.down = True
    with pytest.raises(Unavailable):
        await registry.list_models()
