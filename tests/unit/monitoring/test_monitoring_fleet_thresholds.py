"""False-alarm control across a fleet (core/fleet_thresholds.py): each partition monitor's
budget is the policy's divided by the fleet's partition count N (from the registry or the
partitions seen), so the fleet's expected false alarms over a stationary day stay below one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from registry_fake import FakeRegistry

from driftloop.services.monitoring.adapters.registry import RegistryProfiles
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.fleet_dispatch import FleetDispatch
from driftloop.services.monitoring.core.fleet_episodes import FleetEpisodeRules
from driftloop.services.monitoring.core.fleet_thresholds import (
    FleetSizes,
    daily_false_alarms,
    divisor,
    fleet_daily_false_alarms,
    fleet_policy,
)
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.services.monitoring.core.performance import PerformanceTracker
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.profile import build_profile
from driftloop.shared.registry_types import Model, TrainingSpec

pytestmark = pytest.mark.unit

FLEET = "arrivals"
POLICY = DriftPolicy()


def partition(i: int) -> str:
    return f"{FLEET}/route_id={i}"


def test_a_partitions_budget_is_the_policys_shared_by_n() -> None:
    scaled = fleet_policy(POLICY, 1024)
    assert scaled.alpha == pytest.approx(POLICY.alpha / 1024)
    assert scaled.error_arl0_rows == pytest.approx(POLICY.error_arl0_rows * 1024)
    assert scaled.adwin_delta == pytest.approx(POLICY.adwin_delta / 1024)
    assert (scaled.window_rows, scaled.min_rows, scaled.eval_every) == (
        POLICY.window_rows,
        POLICY.min_rows,
        POLICY.eval_every,
    )
    assert fleet_policy(POLICY, 1) is POLICY
    assert [divisor(n) for n in (0, 1, 2, 3, 1000, 1024, 16_000)] == [1, 1, 2, 4, 1024, 1024, 16384]


def test_sixteen_thousand_partitions_expect_under_one_false_alarm_a_day() -> None:
    # 100,000 rows and as many labels a day per partition (about one a second)
    rows = labels = [100_000.0] * 16_000
    unscaled = sum(daily_false_alarms(POLICY, r, n) for r, n in zip(rows, labels, strict=True))
    assert unscaled > 1_000, "16,000 monitors at the per-model budget: thousands a day"
    scaled = fleet_daily_false_alarms(POLICY, 16_000, rows, labels)
    assert scaled < 1.0
    # the bound is one average partition's at the unscaled policy (a power of two: < that)
    assert scaled <= daily_false_alarms(POLICY, 100_000, 100_000)


def test_the_sequential_detectors_thresholds_rise_with_n() -> None:
    def glr_threshold(policy: DriftPolicy) -> float:
        tracker = PerformanceTracker(
            None,
            burn_in_rows=policy.label_burn_in_rows,
            window_rows=policy.label_window_rows,
            error_shift=policy.error_shift,
            error_arl0=policy.error_arl0_rows,
        )
        return tracker.glr.threshold

    # ln(16384) / 0.9 = 10.8 nats more evidence before the GLR alarms
    assert glr_threshold(fleet_policy(POLICY, 16_384)) > glr_threshold(POLICY) + 10


class Counts:
    def __init__(self, answer: int | Exception) -> None:
        self.answer = answer
        self.asked = 0

    async def partition_count(self, fleet: str) -> int:
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_n_comes_from_the_registry_at_most_every_refresh_and_from_partitions_seen() -> None:
    now = [1000.0]
    counts = Counts(300)
    sizes = FleetSizes(counts, refresh_s=60, clock=lambda: now[0])
    assert sizes.divisor(FLEET) == 1
    assert await sizes.refresh(FLEET) and sizes.size(FLEET) == 300 and sizes.divisor(FLEET) == 512
    counts.answer = 700
    assert not await sizes.refresh(FLEET) and counts.asked == 1, "asked again only after 60 s"
    now[0] += 60
    assert await sizes.refresh(FLEET) and sizes.divisor(FLEET) == 1024
    for i in range(1500):
        sizes.saw(partition(i))
    assert sizes.size(FLEET) == 1500 and sizes.divisor(FLEET) == 2048
    assert sizes.scale("churn", POLICY) is POLICY, "plain models keep their policy"
    assert sizes.scale(partition(1), POLICY).alpha == pytest.approx(POLICY.alpha / 2048)


async def test_an_unreachable_registry_leaves_the_partitions_seen() -> None:
    from driftloop.shared.errors import Unavailable

    sizes = FleetSizes(Counts(Unavailable("registry down")), refresh_s=60)
    sizes.saw(partition(1))
    sizes.saw(partition(2))
    assert not await sizes.refresh(FLEET)
    assert sizes.divisor(FLEET) == 2


async def test_the_registry_adapter_counts_a_fleets_partitions(tmp_path: Path) -> None:
    fake = FakeRegistry()
    fake.put_model(Model(FLEET, "trips", "delay", TrainingSpec(partition_by=("route_id",))))
    for i in range(3):
        fake.put_model(Model(partition(i), "trips", "delay", fleet=FLEET))
    fake.put_model(Model("churn", "customers", "label"))
    profiles = RegistryProfiles(fake, LocalObjectStore(tmp_path))  # type: ignore[arg-type]
    assert await profiles.partition_count(FLEET) == 3


def test_partition_monitors_are_built_with_the_fleets_share_and_rescaled_as_it_grows() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=500)})
    profile = build_profile("m", "1", frame, pd.Series(["y"] * 500))
    sizes = FleetSizes()
    overrides = {FLEET: DriftPolicy(alpha=0.01)}
    monitors = ModelMonitors(POLICY, overrides, scale=sizes.scale)
    fleets = FleetDispatch(monitors, sizes, FleetEpisodeRules())
    for i in range(3):
        monitors.switch(partition(i), "1", profile)
        fleets.saw(partition(i), 0.0)
    monitors.switch("churn", "1", profile)
    assert monitors.get("churn").policy.alpha == POLICY.alpha
    assert monitors.get(partition(0)).policy.alpha == pytest.approx(0.01 / 4), (
        "the fleet's own override, shared by its 3 partitions (rounded up to 4)"
    )
    for i in range(3, 5):
        monitors.switch(partition(i), "1", profile)
        fleets.saw(partition(i), 0.0)
    assert [monitors.get(partition(i)).policy.alpha for i in range(5)] == pytest.approx(
        [0.01 / 8] * 5
    ), "the monitors built before take the new share at once"


def test_scaled_partitions_stay_quiet_where_unscaled_ones_cry_wolf() -> None:
    """64 partitions of a stationary stream, each 2,000 rows (37 evaluations; evaluations are
    100 s apart so no episode mutes the next); alpha 0.05 per evaluation is loose on purpose so
    that the unscaled fleet shows false alarms in a short test. The scaled fleet's bound is one
    unscaled monitor's: 37 x 0.05 = 1.85."""
    rng = np.random.default_rng(11)
    profiles = [  # each partition its own training sample, as a fleet's are
        build_profile(
            "m", "1", pd.DataFrame({f"x{i}": rng.normal(size=3000) for i in range(3)}), None
        )
        for _ in range(64)
    ]
    loose = DriftPolicy(alpha=0.05, persistence=1, triggers=frozenset({"features"}))

    def false_alarms(scale: bool) -> int:
        sizes = FleetSizes()
        for i in range(64):
            sizes.saw(partition(i))
        monitors = ModelMonitors(loose, scale=sizes.scale if scale else None)
        found = 0
        stream = np.random.default_rng(12)
        for i in range(64):
            monitors.switch(partition(i), "1", profiles[i])
            live = pd.DataFrame({f"x{j}": stream.normal(size=2000) for j in range(3)})
            for start in range(0, 2000, 50):
                chunk = live.iloc[start : start + 50]
                now = start * 100.0
                found += monitors.observe(partition(i), "1", chunk, now) is not None
        return found

    unscaled, scaled = false_alarms(False), false_alarms(True)
    # nominally 64 times fewer; consecutive evaluations share 5/6 of their rows, so alarms
    # come in bursts and counts vary more than Poisson's
    assert unscaled >= 30, unscaled
    assert scaled <= 6 and scaled * 16 <= unscaled, (scaled, unscaled)
