"""Which reference each monitor compares with (core/references.py), over the registry fake: every
production profile on start, a missing one asked for again only after a delay, the deployed one
on a deployment; an unreachable registry at start is not fatal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from registry_fake import FakeRegistry
from structlog.testing import capture_logs

from driftloop.services.monitoring.adapters.registry import RegistryProfiles
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.services.monitoring.core.references import References
from driftloop.shared.errors import NotFound, Unavailable
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.profile import build_profile
from driftloop.shared.registry_types import ModelVersion

pytestmark = pytest.mark.unit
FRAME = pd.DataFrame({"x": np.random.default_rng(3).normal(size=200)})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(tmp_path: Path) -> tuple[FakeRegistry, References, ModelMonitors, Clock]:
    store = LocalObjectStore(tmp_path)
    for model, version in (("a", "1"), ("a", "2"), ("b", "3")):
        profile = build_profile(model, version, FRAME, pd.Series(["y"] * len(FRAME)))
        store.put(f"profiles/{model}/{version}.json", profile.to_json())
    fake = FakeRegistry()
    for model, version in (("a", "1"), ("a", "2"), ("b", "3")):
        key = f"profiles/{model}/{version}.json"
        fake.put_version(ModelVersion(model, version, profile_uri=key))
    monitors, clock = ModelMonitors(DriftPolicy()), Clock()
    source = RegistryProfiles(fake, store)  # type: ignore[arg-type]
    references = References(monitors, source, DriftHistory(), clock=clock, retry_after_s=10)
    return fake, references, monitors, clock


async def test_start_loads_every_production_reference_and_skips_missing_profiles(
    tmp_path: Path,
) -> None:
    fake, references, monitors, _ = setup(tmp_path)
    fake.put_version(ModelVersion("c", "1"), alias="production")  # no profile_uri
    for model, version in (("a", "1"), ("b", "3")):
        await fake.promote(model, version, "first")
    with capture_logs() as logged:
        await references.load_production()
    assert (monitors.version("a"), monitors.version("b")) == ("1", "3")
    assert not monitors.knows("c")
    assert [e["model"] for e in logged if e["event"] == "profile_missing"] == ["c"]


async def test_an_unreachable_registry_at_start_is_not_fatal_and_loads_lazily(
    tmp_path: Path,
) -> None:
    fake, references, monitors, clock = setup(tmp_path)
    await fake.promote("a", "1", "first")
    fake.down = True
    with capture_logs() as logged:
        await references.load_production()
    assert "registry_unreachable_at_start" in [e["event"] for e in logged]
    assert not monitors.knows("a")

    assert not await references.ensure("a")  # still down: skip these predictions
    asked = fake.calls["GetModel"]
    fake.down = False
    clock.now += 5
    assert not await references.ensure("a"), "asked again only after retry_after_s"
    assert fake.calls["GetModel"] == asked
    clock.now += 5
    assert await references.ensure("a") and monitors.version("a") == "1"
    assert await references.ensure("a") and fake.calls["GetModel"] == asked + 1


async def test_a_model_without_production_is_skipped_until_the_retry_delay(
    tmp_path: Path,
) -> None:
    fake, references, monitors, clock = setup(tmp_path)
    assert not await references.ensure("a")  # a exists but has no production version
    assert not await references.ensure("nobody")  # no such model: the same answer
    await fake.promote("a", "1", "first")
    assert not await references.ensure("a")
    clock.now += 10
    assert await references.ensure("a") and monitors.version("a") == "1"


async def test_a_deployment_switches_to_its_reference_once(tmp_path: Path) -> None:
    fake, references, monitors, _ = setup(tmp_path)
    await fake.promote("a", "1", "first")
    await references.load_production()
    switched = await references.switch("a", "2")
    assert switched is not None and switched.version == "2" and monitors.version("a") == "2"
    asked = fake.calls["GetVersion"]
    assert await references.switch("a", "2") is None, "a re-delivery changes nothing"
    assert fake.calls["GetVersion"] == asked


async def test_switch_errors_reach_the_consumer(tmp_path: Path) -> None:
    """The consumer retries Unavailable and dead-letters the rest; switch does not hide them."""
    fake, references, _, _ = setup(tmp_path)
    with pytest.raises(NotFound):
        await references.switch("a", "9")
    fake.down = True
    with pytest.raises(Unavailable):
        await references.switch("a", "2")
