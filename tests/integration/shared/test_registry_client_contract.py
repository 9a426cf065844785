"""The registry client contract (Feast's universal suite, small): one set of assertions run
against the in-memory fake the unit tests use (tests/registry_fake.py) and against the real
client (shared/registry_client.py) talking to a real registry gRPC server on a free port.

Among them: not found is NotFound, a wrong token is a permission error asked once (never
Unavailable, so nobody retries it), a registry that is down is Unavailable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import free_ports
from pydantic import SecretStr
from registry_fake import FakeRegistry
from registry_harness import registry_server

from driftloop.services.registry.adapters.grpc import SERVICE_NAME
from driftloop.shared.cli.stack.broker import free_port
from driftloop.shared.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from driftloop.shared.grpc.server import RPC_TOTAL
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.registry_types import (
    Candidate,
    DataFile,
    Lineage,
    ShadowEvidence,
    SliceMetrics,
    TrainingSpec,
)
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration
TOKEN = "contract-token-7f3a"
SHA = "0123456789abcdef" * 4


@dataclass
class Backend:
    registry: Any
    """A client sending the right token."""
    wrong_token: Any
    """A client of the same registry sending a wrong token."""
    down: Any
    """A client of a registry that is not running."""
    attempts: Callable[[str], int]
    """How many calls of an API method ("RegisterVersion") reached the registry so far."""


@asynccontextmanager
async def fake_backend() -> AsyncIterator[Backend]:
    fake = FakeRegistry(token=TOKEN)
    down = FakeRegistry()
    down.down = True
    yield Backend(fake, fake.presenting("wrong"), down, lambda method: fake.calls[method])


def served(method: str) -> int:
    """Calls of `method` the in-process server counted (every status), from its metrics."""
    path = f"/{SERVICE_NAME}/{method}"
    return int(
        sum(
            sample.value
            for metric in RPC_TOTAL.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.labels.get("method") == path
        )
    )


@asynccontextmanager
async def real_backend(common: CommonSettings) -> AsyncIterator[Backend]:
    common = common.model_copy(update={"auth_token": SecretStr(TOKEN)})
    wrong = common.model_copy(update={"auth_token": SecretStr("wrong")})
    nowhere = common.ports.model_copy(update={"registry": free_port()})  # nothing listens
    down = common.model_copy(update={"ports": nowhere})
    async with (
        registry_server(common),
        RegistryClient(common) as registry,
        RegistryClient(wrong) as wrong_token,
        RegistryClient(down, timeout=3) as unreachable,
    ):
        yield Backend(registry, wrong_token, unreachable, served)


@pytest.fixture
def common(tmp_path: Path, broker: str) -> CommonSettings:
    """The registry's contract is about gRPC, not the bus: the embedded broker is enough (its
    outbox publisher needs one), so this module does not run twice."""
    return CommonSettings(
        data_dir=tmp_path / "data", kafka_bootstrap=broker, ports=free_ports(), log_json=True
    )


@pytest.fixture(params=["fake", "real"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "fake":
        async with fake_backend() as found:
            yield found
    else:
        async with real_backend(request.getfixturevalue("common")) as found:
            yield found


def candidate(run_id: str, accuracy: float, champion: str = "", champion_accuracy: float = 0.0):
    return Candidate(
        model="churn",
        run_id=run_id,
        artifact_uri=f"artifacts/churn/{run_id}/model.skops",
        artifact_sha256=SHA,
        profile_uri=f"artifacts/churn/{run_id}/profile.json",
        metrics={"accuracy": accuracy, "f1_macro": accuracy},
        champion_metrics={"accuracy": champion_accuracy} if champion else {},
        champion_version=champion,
        lineage=Lineage(
            run_id=run_id,
            manifest_version=2,
            files=(DataFile("curated/churn/part-0.parquet", SHA, 500),),
            params={"C": "1.0"},
            correlation_id=f"corr-{run_id}",
            trigger="manual",
            training_rows=500,
        ),
        correlation_id=f"corr-{run_id}",
        slice_metrics=(SliceMetrics("plan", "pro", 40, {"accuracy": accuracy}),),
    )


async def declared(registry: Any) -> None:
    await registry.create_model("churn", "churn-data", "label", author="contract")


async def test_models_are_created_read_and_listed(backend: Backend) -> None:
    r = backend.registry
    await declared(r)
    model = await r.get_model("churn")
    assert (model.name, model.dataset, model.target) == ("churn", "churn-data", "label")
    assert model.production_version == "" and model.spec_version == 1
    assert [m.name for m in await r.list_models()] == ["churn"]
    with pytest.raises(AlreadyExists):
        await declared(r)
    with pytest.raises(InvalidInput):
        await r.create_model("other", "d", "")


async def test_a_listing_after_a_revision_has_only_what_changed(backend: Backend) -> None:
    r = backend.registry
    await declared(r)
    first = await r.model_listing(brief=True)
    assert [m.name for m in first.models] == ["churn"] and first.revision > 0
    assert (await r.model_listing(brief=True, changed_after=first.revision)).models == ()
    await r.create_model("iris", "flowers", "species")
    await r.register_version(candidate("run-1", 0.9))
    changed = await r.model_listing(changed_after=first.revision)
    assert [(m.name, m.production_version) for m in changed.models] == [
        ("churn", "1"),
        ("iris", ""),
    ]
    assert changed.revision > first.revision
    assert (await r.get_model("churn")).partitions == 0  # not a fleet
    with pytest.raises(InvalidInput):
        await r.model_listing(changed_after=-1)


async def test_what_does_not_exist_is_not_found(backend: Backend) -> None:
    r = backend.registry
    with pytest.raises(NotFound):
        await r.get_model("nobody")
    await declared(r)
    with pytest.raises(NotFound):
        await r.get_version("churn", "9")
    with pytest.raises(NotFound):
        await r.list_versions("nobody")
    with pytest.raises(NotFound):
        await r.get_spec("churn", 9)
    assert await r.production("churn") is None, "no production version yet"
    assert await r.production("nobody") is None


async def test_a_registered_version_round_trips_and_registering_is_idempotent(
    backend: Backend,
) -> None:
    r = backend.registry
    await declared(r)
    first = await r.register_version(candidate("run-1", 0.9))
    assert first.promoted and first.version.version == "1"
    assert first.version.status == "production"
    again = await r.register_version(candidate("run-1", 0.9))
    assert again.version.version == "1", "the same run registers once"
    v = await r.get_version("churn", "1")
    assert (v.artifact_uri, v.artifact_sha256) == ("artifacts/churn/run-1/model.skops", SHA)
    assert v.profile_uri == "artifacts/churn/run-1/profile.json" and v.run_id == "run-1"
    assert v.metrics["accuracy"] == pytest.approx(0.9)
    assert (v.lineage.correlation_id, v.lineage.manifest_version) == ("corr-run-1", 2)
    assert v.lineage.files[0].rows == 500 and v.lineage.params == {"C": "1.0"}
    assert v.slice_metrics[0].column == "plan" and v.slice_metrics[0].rows == 40
    production = await r.production("churn")
    assert production is not None and production.version == "1"
    assert (await r.get_model("churn")).production_version == "1"
    found = await r.search_versions(correlation_id="corr-run-1")
    assert [(f.model, f.version) for f in found] == [("churn", "1")]
    assert [x.version for x in await r.list_versions("churn")] == ["1"]


async def test_decisions_move_production_and_leave_a_history(backend: Backend) -> None:
    r = backend.registry
    await declared(r)
    await r.register_version(candidate("run-1", 0.9))
    worse = await r.register_version(candidate("run-2", 0.5, champion="1", champion_accuracy=0.9))
    assert not worse.promoted and worse.version.status == "rejected"
    with pytest.raises(InvalidInput):
        await r.promote("churn", "2", "  ")  # a reason is required
    with pytest.raises(Conflict):
        await r.promote("churn", "1", "already there")
    promoted = await r.promote("churn", "2", "operator knows better", actor="ops")
    assert promoted.status == "production"
    assert (await r.get_version("churn", "1")).status == "archived"
    back = await r.rollback("churn", "slice regressed", actor="ops")
    assert back.version == "1" and (await r.production("churn")).version == "1"
    history = await r.get_history("churn")
    moves = [(a.version, a.previous_version, a.action) for a in history.aliases]
    assert moves[-2:] == [("2", "1", "promote"), ("1", "2", "rollback")]
    assert history.aliases[-1].reason == "slice regressed" and history.aliases[-1].at
    assert "register" in [a.action for a in history.audit]


async def test_spec_versions(backend: Backend) -> None:
    r = backend.registry
    await declared(r)
    first = await r.get_spec("churn")
    assert first.number == 1
    second = await r.set_spec(
        "churn", spec=TrainingSpec(estimator="random_forest"), author="ops", comment="trees"
    )
    assert second.number == 2 and second.spec.estimator == "random_forest"
    assert (await r.get_spec("churn")).number == 2
    assert (await r.get_spec("churn", 1)).number == 1
    assert [s.number for s in await r.list_specs("churn")] == [1, 2]


async def test_evidence_about_a_version_that_is_not_the_shadow_changes_nothing(
    backend: Backend,
) -> None:
    r = backend.registry
    await declared(r)
    await r.register_version(candidate("run-1", 0.9))
    evidence = ShadowEvidence("churn", "1", "1", 10, {"accuracy": 1.0}, {"accuracy": 1.0})
    verdict = await r.report_shadow_evidence(evidence)
    assert verdict.outcome == "promoted" and verdict.version.status == "production"


async def test_a_wrong_token_is_a_permission_error_asked_once(backend: Backend) -> None:
    await declared(backend.registry)
    before = backend.attempts("RegisterVersion")
    with pytest.raises(PermissionDenied) as refused:
        await backend.wrong_token.register_version(candidate("run-1", 0.9))
    assert not isinstance(refused.value, Unavailable), "a wrong token is no outage"
    assert backend.attempts("RegisterVersion") == before + 1, "asked once, not retried"
    with pytest.raises(PermissionDenied):
        await backend.wrong_token.promote("churn", "1", "no")
    assert (await backend.wrong_token.get_model("churn")).name == "churn", "reads need no token"
    assert await backend.registry.list_versions("churn") == [], "nothing was registered"


async def test_a_registry_that_is_down_is_unavailable(backend: Backend) -> None:
    with pytest.raises(Unavailable):
        await backend.down.list_models()
    with pytest.raises(Unavailable):
        await backend.down.get_version("churn", "1")
    with pytest.raises(Unavailable):
        await backend.down.register_version(candidate("run-1", 0.9))
