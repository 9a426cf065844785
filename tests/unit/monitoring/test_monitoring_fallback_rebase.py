"""A fleet's global model monitored on its fallback rows only (no distribution tests against a
reference of every partition), and #17: a monitor rebased on live data when the registry finds
the champion as good on post-drift data (the same shift does not alarm again, a real one does)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.services.monitoring.core.decision import DriftDecision
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.fleet_dispatch import FleetDispatch
from driftloop.services.monitoring.core.fleet_episodes import FleetEpisodeRules
from driftloop.services.monitoring.core.fleet_thresholds import FleetSizes
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitors import ModelMonitors
from driftloop.services.monitoring.core.rebase import CHAMPION_AS_GOOD, settles_as_good
from driftloop.services.monitoring.core.references import References
from driftloop.services.registry.core.domain import PromotionPolicy
from driftloop.services.registry.core.policy import decide
from driftloop.shared.paired import compare
from driftloop.shared.profile import ReferenceProfile, build_profile

pytestmark = pytest.mark.unit

FLEET = "arrivals"
POLICY = DriftPolicy(episode_timeout_s=600.0)


def fleet_profile(rng: np.random.Generator) -> ReferenceProfile:
    """The global model's reference: every route, each with its own level of x."""
    routes = rng.integers(0, 10, 4000)
    frame = pd.DataFrame({"route_id": routes, "x": rng.normal(routes * 1.0, 1.0)})
    return build_profile(FLEET, "1", frame, pd.Series(["y"] * 4000))


def fallback_rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """What the global model answers once routes 0-7 have their own models: routes 8 and 9."""
    routes = rng.integers(8, 10, n)
    return pd.DataFrame({"route_id": routes, "x": rng.normal(routes * 1.0, 1.0)})


def test_the_global_model_of_a_fleet_with_partition_models_tests_no_distributions() -> None:
    rng = np.random.default_rng(3)
    profile = fleet_profile(rng)
    sizes = FleetSizes()
    monitors = ModelMonitors(POLICY, scale=sizes.scale)
    fleets = FleetDispatch(monitors, sizes, FleetEpisodeRules())
    monitors.switch(FLEET, "1", profile)
    # alone, the global model answers every route: its rows are its reference's population
    alone = fallback_rows(rng, 600)
    assert monitors.observe(FLEET, "1", alone, 10.0) is not None, "a sub-population drifts"
    monitors.switch(FLEET, "2", profile.model_copy(update={"version": "2"}))
    monitors.switch(f"{FLEET}/route_id=1", "1", profile)
    fleets.saw(f"{FLEET}/route_id=1", 20.0)  # a partition model answers rows of the fleet now
    for start in range(0, 3000, 300):
        assert monitors.observe(FLEET, "2", fallback_rows(rng, 300), 30.0 + start) is None
    report = monitors.report(FLEET, 4000.0)
    assert report.features == () or all(f.test not in ("ks", "chi2") for f in report.features)
    assert monitors.get(FLEET).population_tests is False
    assert monitors.get(f"{FLEET}/route_id=1").population_tests, "partitions: their own rows"
    # a global model monitored after its fleet's partitions: built without them too
    later = ModelMonitors(POLICY)
    later.fallback(FLEET)
    later.switch(FLEET, "2", profile)
    assert later.observe(FLEET, "2", fallback_rows(rng, 600), 10.0) is None
    assert later.get(FLEET).population_tests is False


def plain_profile(rng: np.random.Generator) -> ReferenceProfile:
    frame = pd.DataFrame({"x": rng.normal(0.0, 1.0, 3000), "c": rng.choice(["a", "b"], 3000)})
    return build_profile("m", "1", frame, pd.Series(rng.choice(["0", "1"], 3000)))


def rows(rng: np.random.Generator, n: int, mean: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(mean, 1.0, n),
            "c": rng.choice(["a", "b"], n),
            "_prediction": rng.choice(["0", "1"], n),
        }
    )


def drifted_until_decision(
    monitors: ModelMonitors, rng: np.random.Generator, mean: float, now: float
) -> DriftDecision | None:
    for step in range(20):
        found = monitors.observe("m", "1", rows(rng, 50, mean), now + step)
        if found is not None:
            return found
    return None


class NoSource:
    async def production_versions(self) -> dict[str, str]:
        return {}

    async def production_version(self, model: str) -> str | None:
        return None

    async def profile(self, model: str, version: str) -> ReferenceProfile:
        raise AssertionError("not asked")


def test_champion_as_good_rebases_the_reference_and_a_real_drift_still_alarms() -> None:
    rng = np.random.default_rng(8)
    monitors = ModelMonitors(POLICY)
    monitors.switch("m", "1", plain_profile(rng))
    history = DriftHistory()
    refs = References(monitors, NoSource(), history)
    assert monitors.observe("m", "1", rows(rng, 300, 0.0), 0.0) is None
    harmless = drifted_until_decision(monitors, rng, 1.5, 10.0)
    assert harmless is not None, "the covariate shift alarms once"
    history.record(harmless, "ev-1", "chain-1")
    reason = f"not better by 0.010 (upper bound -0.004): {CHAMPION_AS_GOOD}; paired ..."
    assert not refs.settle("m", "chain-other", reason), "another chain's candidate"
    assert not refs.settle("m", "chain-1", "inconclusive: lower bound ..."), "not conclusive"
    monitors.observe("m", "1", rows(rng, 300, 1.5), 40.0)  # the window: post-shift rows
    assert refs.settle("m", "chain-1", reason)
    report = monitors.report("m", 50.0)
    assert report.open_episode_id == "" and report.reference_rows == 300
    # the same shift, long after episode_timeout_s: no new episode
    for hour in range(1, 4):
        assert drifted_until_decision(monitors, rng, 1.5, 3600.0 * hour) is None
    # a real later drift still alarms
    assert drifted_until_decision(monitors, rng, -2.0, 20000.0) is not None


def test_without_the_rebase_the_same_shift_alarms_again_after_the_timeout() -> None:
    rng = np.random.default_rng(8)
    monitors = ModelMonitors(POLICY)
    monitors.switch("m", "1", plain_profile(rng))
    monitors.observe("m", "1", rows(rng, 300, 0.0), 0.0)
    assert drifted_until_decision(monitors, rng, 1.5, 10.0) is not None
    assert drifted_until_decision(monitors, rng, 1.5, 3600.0) is not None, "#17's re-episode"


def test_the_registry_words_a_conclusive_not_better_as_monitoring_expects() -> None:
    """The registry's own decision on a paired comparison: "not better" settles, the
    inconclusive one does not (its reason is what ModelRejected carries)."""
    n01, n10, both, neither = 20, 22, 3000, 300
    truth = np.array(["a"] * (n01 + n10 + both + neither))
    cand = np.array(["a"] * n01 + ["b"] * n10 + ["a"] * both + ["b"] * neither)
    champ = np.array(["b"] * n01 + ["a"] * n10 + ["a"] * both + ["b"] * neither)
    c = compare(truth, cand, champ)
    rule = PromotionPolicy(metric="accuracy", margin=0.0, floor=0.6)
    found = decide(rule, {"accuracy": c.candidate}, {"accuracy": c.champion}, comparison=c)
    assert found.outcome == "rejected" and settles_as_good(found.reason)
    c = compare(truth[:102], cand[:102], champ[:102])
    undecided = decide(rule, {"accuracy": c.candidate}, {"accuracy": c.champion}, comparison=c)
    assert not settles_as_good(undecided.reason)
