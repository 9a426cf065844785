"""A fleet's partitions get their references lazily (core/references.py): not at start, not on a
deployment of one not monitored yet, but on their first log or label, with the fleet's share of
the false-alarm budget; an episode recorded for a fleet is resumed by its partitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from registry_fake import FakeRegistry

from driftloop.services.monitoring.adapters.registry import RegistryProfiles
from driftloop.services.monitoring.core.decision import DriftDecision
from driftloop.services.monitoring.core.drift import DriftPolicy, FeatureDrift
from driftloop.services.monitoring.core.fleet_episodes import fleet_decision
from driftloop.services.monitoring.core.fleet_thresholds import FleetSizes
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.services.monitoring.core.references import References
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.profile import build_profile
from driftloop.shared.registry_types import Model, ModelVersion, TrainingSpec

pytestmark = pytest.mark.unit

FLEET = "arrivals"
PARTITIONS = [f"{FLEET}/route_id={i}" for i in range(3)]


async def setup(tmp_path: Path, history: DriftHistory) -> tuple[References, ModelMonitors]:
    store = LocalObjectStore(tmp_path)
    frame = pd.DataFrame({"x": np.random.default_rng(3).normal(size=200)})
    fake = FakeRegistry()
    fake.put_model(Model(FLEET, "trips", "late", TrainingSpec(partition_by=("route_id",))))
    for model in [FLEET, *PARTITIONS]:
        if model != FLEET:
            fake.put_model(Model(model, "trips", "late", fleet=FLEET))
        for version in ("1", "2"):
            profile = build_profile(model, version, frame, pd.Series(["y"] * len(frame)))
            key = f"profiles/{model}/{version}.json"
            store.put(key, profile.to_json())
            fake.put_version(ModelVersion(model, version, profile_uri=key))
        await fake.promote(model, "1", "first")
    source = RegistryProfiles(fake, store)  # type: ignore[arg-type]
    sizes = FleetSizes(source)
    await sizes.refresh(FLEET)
    monitors = ModelMonitors(DriftPolicy(), scale=sizes.scale)
    return References(monitors, source, history), monitors


async def test_partitions_load_on_first_sight_only(tmp_path: Path) -> None:
    references, monitors = await setup(tmp_path, DriftHistory())
    await references.load_production()
    assert monitors.knows(FLEET), "the fleet's global model loads at start as any model"
    assert not any(monitors.knows(p) for p in PARTITIONS)
    assert await references.switch(PARTITIONS[0], "2") is None, "nothing loaded for it yet"
    assert not monitors.knows(PARTITIONS[0])
    assert await references.ensure(PARTITIONS[0])
    monitor = monitors.get(PARTITIONS[0])
    assert monitor.version == "1" and monitor.policy.alpha == pytest.approx(1e-4 / 4)
    assert monitors.get(FLEET).policy.alpha == pytest.approx(1e-4)
    switched = await references.switch(PARTITIONS[0], "2")
    assert switched is not None and monitors.version(PARTITIONS[0]) == "2"


async def test_a_partition_resumes_the_fleet_episode_that_lists_it(tmp_path: Path) -> None:
    history = DriftHistory()
    members = [
        DriftDecision(
            model=p,
            version="1",
            episode_id=f"own-{p}",
            features=(FeatureDrift("x", "ks", 0.3, 1e-9, 1e-5, True),),
            drift_share=1.0,
            window_start=90.0,
            window_end=100.0,
            live_rows=300,
            reference_rows=200,
            decided_at=100.0,
        )
        for p in PARTITIONS[:2]
    ]
    episode = fleet_decision(FLEET, "1", members, 105.0)
    history.record(episode)
    references, monitors = await setup(tmp_path, history)
    for partition in PARTITIONS:
        assert await references.ensure(partition)
    reports = [monitors.report(p, 110.0) for p in PARTITIONS]
    assert [r.open_episode_id for r in reports] == [episode.episode_id] * 2 + [""]
