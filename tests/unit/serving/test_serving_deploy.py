"""Deployment: verify, load, warm up, swap; any failure keeps the current version serving.
Also the ModelPromoted handler's reports, through a recording stand-in for the publisher."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from registry_fake import FakeRegistry
from serving_models import make_broken_pipeline, make_pipeline
from structlog.testing import capture_logs

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.serving.adapters.kafka import ModelEvents
from driftloop.services.serving.adapters.registry import RegistryVersions
from driftloop.services.serving.core import metrics
from driftloop.services.serving.core.deployment import Deployer
from driftloop.services.serving.core.reconcile import Reconciler
from driftloop.services.serving.core.slot import ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.bus import envelope
from driftloop.shared.errors import ArtifactRejected, InvalidInput, NotFound, RemoteFailure
from driftloop.shared.names import check_key
from driftloop.shared.registry_types import Lineage, ModelVersion

pytestmark = pytest.mark.unit

GOOD = artifacts.dump_model(make_pipeline())
OTHER = artifacts.dump_model(make_pipeline(seed=1))
BROKEN = artifacts.dump_model(make_broken_pipeline())


class Store:
    """An in-memory artifact store that counts fetches and can hold one back."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.fetched: list[str] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def fetch(self, key: str) -> bytes:
        self.fetched.append(key)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        check_key(key)  # as every real store does
        if key not in self.objects:
            raise NotFound(f"object {key!r} not found")
        return self.objects[key]


async def load(data: bytes, sha256: str) -> Any:
    return await asyncio.to_thread(artifacts.load_model, data, sha256)


def deployer() -> tuple[Deployer, Store]:
    store = Store({"a/1/model.skops": GOOD, "a/2/model.skops": OTHER, "a/3/model.skops": BROKEN})
    return Deployer(ModelSlot(), store.fetch, load), store


def failures(model: str) -> float:
    return metrics.DEPLOY_FAILURES.labels(model)._value.get()


async def test_deploy_swaps_in_and_reports_the_previous_version() -> None:
    d, _ = deployer()
    first = await d.deploy("m", "1", "a/1/model.skops", artifacts.sha256(GOOD))
    assert (first.version, first.previous_version, first.swapped) == ("1", "", True)
    second = await d.deploy("m", "2", "a/2/model.skops", artifacts.sha256(OTHER))
    assert (second.previous_version, second.swapped) == ("1", True)
    assert second.load_seconds > 0
    assert d.slot.get("m").version == "2" and d.slot.versions("m") == ["2", "1"]


async def test_hash_mismatch_keeps_the_current_version() -> None:
    d, _ = deployer()
    await d.deploy("h", "1", "a/1/model.skops", artifacts.sha256(GOOD))
    before = failures("h")
    with pytest.raises(ArtifactRejected, match="hash mismatch"):
        await d.deploy("h", "2", "a/2/model.skops", "0" * 64)
    assert d.slot.get("h").version == "1" and d.slot.versions("h") == ["1"]
    assert ("h", "2") in d.rejected
    assert failures("h") == before + 1


async def test_warmup_failure_keeps_the_current_version() -> None:
    d, _ = deployer()
    await d.deploy("w", "1", "a/1/model.skops", artifacts.sha256(GOOD))
    with pytest.raises(ArtifactRejected, match="failed its warm-up prediction"):
        await d.deploy("w", "3", "a/3/model.skops", artifacts.sha256(BROKEN))
    assert d.slot.get("w").version == "1"


async def test_missing_artifact_keeps_the_current_version() -> None:
    d, _ = deployer()
    await d.deploy("x", "1", "a/1/model.skops", artifacts.sha256(GOOD))
    with pytest.raises(NotFound):
        await d.deploy("x", "2", "a/9/model.skops", artifacts.sha256(OTHER))
    assert d.slot.get("x").version == "1"
    assert ("x", "2") not in d.rejected  # may appear later: worth retrying


async def test_production_version_is_skipped_and_rollback_needs_no_fetch() -> None:
    d, store = deployer()
    await d.deploy("r", "1", "a/1/model.skops", artifacts.sha256(GOOD))
    await d.deploy("r", "2", "a/2/model.skops", artifacts.sha256(OTHER))
    again = await d.deploy("r", "2", "a/2/model.skops", artifacts.sha256(OTHER))
    assert (again.swapped, again.previous_version) == (False, "1")
    back = await d.deploy("r", "1", "a/1/model.skops", artifacts.sha256(GOOD))
    assert (back.swapped, back.previous_version) == (True, "2")
    assert store.fetched == ["a/1/model.skops", "a/2/model.skops"]
    assert d.slot.versions("r") == ["1", "2"]


async def test_deployments_of_one_model_are_serialized() -> None:
    d, store = deployer()
    store.gate = asyncio.Event()
    sha = artifacts.sha256(GOOD)
    first = asyncio.create_task(d.deploy("s", "1", "a/1/model.skops", sha))
    second = asyncio.create_task(d.deploy("s", "1", "a/1/model.skops", sha))
    await asyncio.wait_for(store.entered.wait(), 10)  # the first task holds the model's lock
    store.gate.set()
    results = await asyncio.gather(first, second)
    assert [r.swapped for r in results] == [True, False]
    assert store.fetched == ["a/1/model.skops"]


class RecordingPublisher:
    """Stands in for EventPublisher in a unit test: builds real envelopes, keeps them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, envelope.Envelope]] = []

    def event(self, payload: Any, **kw: Any) -> envelope.Envelope:
        return envelope.new_event("serving", payload, **kw)

    async def publish(self, topic: str, key: str, event: envelope.Envelope) -> None:
        self.sent.append((topic, key, event))


def promoted(version: str, key: str, sha: str) -> envelope.Envelope:
    payload = events_pb2.ModelPromoted(
        model="e", version=version, artifact_uri=key, artifact_sha256=sha, action="promote"
    )
    return envelope.new_event("registry", payload, correlation_id="corr-1")


async def test_promotions_are_reported_as_deployed_or_failed_with_their_cause() -> None:
    d, _ = deployer()
    publisher = RecordingPublisher()
    handler = ModelEvents(d, publisher, "host:1")  # type: ignore[arg-type]
    ok = promoted("1", "a/1/model.skops", artifacts.sha256(GOOD))
    await handler.handle(ok)
    bad = promoted("2", "a/2/model.skops", "0" * 64)
    await handler.handle(bad)
    ignored = envelope.new_event("registry", events_pb2.ModelRejected(model="e", version="3"))
    await handler.handle(ignored)
    [(topic1, key1, deployed), (topic2, _, failed)] = publisher.sent
    assert (topic1, key1) == ("driftloop.deployments", "e")
    assert deployed.causation_id == ok.event_id and deployed.correlation_id == "corr-1"
    assert (deployed.model_deployed.version, deployed.model_deployed.instance) == ("1", "host:1")
    assert failed.causation_id == bad.event_id and failed.type == "DeploymentFailed"
    assert "hash mismatch" in failed.deployment_failed.error
    assert topic2 == "driftloop.deployments"
    assert d.slot.get("e").version == "1"


def registry(versions: dict[str, tuple[str, str, str]]) -> FakeRegistry:
    """The fake registry with one production version per model: model -> (version, key, sha)."""
    fake = FakeRegistry()
    for model, (version, key, sha) in versions.items():
        lineage = Lineage(correlation_id=f"corr-{model}")
        fake.put_version(ModelVersion(model, version, "", key, sha, lineage=lineage), "production")
    return fake


async def test_reconcile_deploys_production_reports_failures_once_and_survives_outages() -> None:
    d, _ = deployer()
    publisher = RecordingPublisher()
    fake = registry(
        {
            "good": ("1", "a/1/model.skops", artifacts.sha256(GOOD)),
            "gone": ("4", "a/9/model.skops", artifacts.sha256(GOOD)),
        }
    )
    reconciler = Reconciler(
        d,
        ModelEvents(d, publisher, "h:1"),
        RegistryVersions(fake),  # type: ignore[arg-type]
        interval_s=5,
    )
    fake.down = True
    await reconciler.reconcile_once()
    assert reconciler.first_done.is_set() and publisher.sent == []
    fake.down = False
    await reconciler.reconcile_once()
    await reconciler.reconcile_once()
    assert d.slot.production_version("good") == "1"
    kinds = sorted((e.type, e.correlation_id) for _, _, e in publisher.sent)
    assert kinds == [("DeploymentFailed", "corr-gone"), ("ModelDeployed", "corr-good")]


async def test_a_registry_refusal_is_logged_as_an_error_and_the_loop_goes_on() -> None:
    """Only an outage is "registry unreachable"; any other failure is an error, not a crash."""
    d, _ = deployer()
    fake = registry({"good": ("1", "a/1/model.skops", artifacts.sha256(GOOD))})
    events = ModelEvents(d, RecordingPublisher(), "h:1")  # type: ignore[arg-type]
    reconciler = Reconciler(d, events, RegistryVersions(fake), interval_s=5)  # type: ignore[arg-type]
    fake.fail_next(RemoteFailure("registry ListModels failed with INTERNAL: a bug"))
    with capture_logs() as logged:
        await reconciler.reconcile_once()
    [failed] = [e for e in logged if e["event"] == "reconcile_failed"]
    assert failed["log_level"] == "error" and failed["error_type"] == "RemoteFailure"
    assert "registry_unreachable" not in [e["event"] for e in logged]
    assert reconciler.first_done.is_set()
    await reconciler.reconcile_once()
    assert d.slot.production_version("good") == "1"


async def test_a_malformed_artifact_key_is_marked_failed_once_not_retried() -> None:
    """#21: a NUL byte in the key failed with ValueError and was retried every 5 s forever."""
    d, _ = deployer()
    await d.deploy("x", "1", "a/1/model.skops", artifacts.sha256(GOOD))
    with pytest.raises(InvalidInput, match="printable"):
        await d.deploy("x", "2", "a/2/model\x00.skops", artifacts.sha256(OTHER))
    assert ("x", "2") in d.rejected and d.slot.get("x").version == "1"
