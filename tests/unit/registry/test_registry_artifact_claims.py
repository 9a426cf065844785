"""What a RegisterVersion caller claims about an artifact is checked before anything is recorded:
the #21 probe (model m2's version registered with m1's artifact, a NUL byte in the URI, encoded
dots, a newline) is refused with INVALID_ARGUMENT's error and leaves the registry unchanged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from driftloop.services.registry.core.domain import Candidate, Lineage, TrainingSpec
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.store import RegistryStore
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit
SHA = "cd" * 32


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    store = RegistryStore(tmp_path / "registry.db")
    r = Registry(store)
    r.create_model("m1", "d", "y", TrainingSpec())
    r.create_model("m2", "d", "y", TrainingSpec())
    yield r
    store.close()


def claim(model: str, run_id: str, uri: str) -> Candidate:
    return Candidate(
        model=model,
        run_id=run_id,
        artifact_uri=uri,
        artifact_sha256=SHA,
        profile_uri="",
        metrics={"accuracy": 0.99, "f1_macro": 0.99},
        champion_metrics={},
        champion_version="",
        lineage=Lineage(run_id=run_id, correlation_id="c", trigger="manual"),
        correlation_id="c",
        causation_id="",
    )


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("artifacts/m1/run-1/model.skops", "must lie under the run's own prefix"),  # m1's artifact
        ("artifacts/m2/run-9/model.skops", "must lie under the run's own prefix"),  # another run
        ("artifacts/m2/run-2/model\x00.skops", "printable"),
        ("artifacts/m2/run-2/model.skops\n", "printable"),
        ("artifacts/m2/run-2/%2e%2e/m1/run-1/model.skops", "no percent-encoding"),
        ("artifacts/m2/run-2/../../m1/run-1/model.skops", "'..' segment"),
    ],
)
def test_an_artifact_outside_the_runs_prefix_is_refused_and_nothing_is_recorded(
    registry: Registry, uri: str, why: str
) -> None:
    with pytest.raises(InvalidInput, match=why):
        registry.register(claim("m2", "run-2", uri))
    assert registry.list_versions("m2") == []


def test_a_profile_outside_the_runs_prefix_is_refused(registry: Registry) -> None:
    good = claim("m2", "run-2", "artifacts/m2/run-2/model.skops")
    with pytest.raises(InvalidInput, match="profile_uri"):
        registry.register(replace(good, profile_uri="artifacts/m1/run-1/profile.json"))
    assert registry.list_versions("m2") == []


def test_a_run_id_that_is_not_a_name_is_refused(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="run id"):
        registry.register(claim("m2", "a/b", "artifacts/m2/a/b/model.skops"))


def test_the_runs_own_artifact_registers(registry: Registry) -> None:
    done = registry.register(claim("m2", "run-2", "artifacts/m2/run-2/model.skops"))
    assert done.version.artifact_uri == "artifacts/m2/run-2/model.skops"
