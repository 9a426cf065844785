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
from driftloop.shared.artifacts import sha256
from driftloop.shared.errors import InvalidInput
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.run_record import RunRecord, run_record_key

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


@pytest.fixture
def verifying(tmp_path: Path) -> tuple[Registry, LocalObjectStore]:
    objects = LocalObjectStore(tmp_path / "objects")
    store = RegistryStore(tmp_path / "verifying.db")
    r = Registry(store, objects=objects)
    r.create_model("m2", "d", "y", TrainingSpec())
    yield r, objects
    store.close()


def stored_run(objects: LocalObjectStore, run_id: str, body: bytes = b"model bytes") -> Candidate:
    """What training leaves for a run: the artifact and the run record with its metrics."""
    uri = f"artifacts/m2/{run_id}/model.skops"
    objects.put(uri, body)
    metrics = {"accuracy": 0.8, "f1_macro": 0.8}
    objects.put(run_record_key("m2", run_id), RunRecord(run_id, metrics).to_json())
    return replace(claim("m2", run_id, uri), artifact_sha256=sha256(body), metrics=metrics)


def test_a_runs_own_stored_candidate_registers(verifying: tuple) -> None:
    registry, objects = verifying
    done = registry.register(stored_run(objects, "run-1"))
    assert done.version.metrics["accuracy"] == 0.8


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"artifact_sha256": "ab" * 32}, "does not match the stored artifact"),
        ({"metrics": {"accuracy": 0.999, "f1_macro": 0.999}}, "differ from the run record"),
        ({"champion_metrics": {"accuracy": 0.1}}, "differ from the run record"),
        ({"artifact_uri": "artifacts/m2/run-1/other.skops"}, "is not in the object store"),
    ],
)
def test_claims_that_differ_from_the_store_are_refused(
    verifying: tuple, change: dict[str, object], why: str
) -> None:
    registry, objects = verifying
    forged = replace(stored_run(objects, "run-1"), **change)
    with pytest.raises(InvalidInput, match=why):
        registry.register(forged)
    assert registry.list_versions("m2") == []


def test_a_run_without_a_run_record_is_refused(verifying: tuple) -> None:
    registry, objects = verifying
    candidate = stored_run(objects, "run-1")
    objects.put(run_record_key("m2", "run-1"), b"{}")
    with pytest.raises(InvalidInput, match="run record is not readable"):
        registry.register(candidate)
    uri = "artifacts/m2/run-2/model.skops"
    objects.put(uri, b"bytes of a run that wrote no record")
    candidate = replace(
        claim("m2", "run-2", uri), artifact_sha256=sha256(b"bytes of a run that wrote no record")
    )
    with pytest.raises(InvalidInput, match="has no run record"):
        registry.register(candidate)
