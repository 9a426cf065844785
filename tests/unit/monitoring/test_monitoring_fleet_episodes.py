"""Fleet episodes (core/fleet_episodes.py, core/fleet_dispatch.py): partition drifts within a
short hold are one DriftDetected for the fleet listing them; an isolated one goes out alone
after the hold; a partition in an open fleet episode does not alarm again on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.services.monitoring.core.decision import DriftDecision, DriftEpisode
from driftloop.services.monitoring.core.drift import DriftPolicy, FeatureDrift
from driftloop.services.monitoring.core.fleet_dispatch import FleetDispatch
from driftloop.services.monitoring.core.fleet_episodes import (
    FleetEpisodeRules,
    FleetEpisodes,
    fleet_decision,
)
from driftloop.services.monitoring.core.fleet_thresholds import FleetSizes
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.shared.profile import build_profile

pytestmark = pytest.mark.unit

FLEET = "arrivals"
RULES = FleetEpisodeRules(hold_s=5.0, window_s=60.0, min_partitions=3, fraction=0.1)


def partition(i: int) -> str:
    return f"{FLEET}/route_id={i}"


def decision(model: str, at: float, feature: str = "weather", p: float = 1e-9) -> DriftDecision:
    return DriftDecision(
        model=model,
        version="3",
        episode_id=f"own-{model}",
        features=(
            FeatureDrift(feature, "chi2", 40.0, p, 1e-6, True),
            FeatureDrift("hour", "ks", 0.05, 0.4, 1e-6, False),
        ),
        drift_share=0.5,
        window_start=at - 30,
        window_end=at,
        live_rows=300,
        reference_rows=2000,
        decided_at=at,
        reasons=(f"feature {feature!r} drifted",),
    )


def episodes(monitored: int = 20, rules: FleetEpisodeRules = RULES) -> FleetEpisodes:
    return FleetEpisodes(rules, monitored=lambda _: monitored, version=lambda _: "7")


def test_partitions_drifting_together_are_one_fleet_episode() -> None:
    found = episodes()
    assert found.hold(FLEET, decision(partition(1), 100.0), 100.0) == []
    assert found.hold(FLEET, decision(partition(2), 101.0), 101.0) == []
    assert found.hold(FLEET, decision(partition(3), 102.0, feature="rain"), 102.0) == []
    assert found.hold(FLEET, decision(partition(4), 104.0), 104.0) == []
    assert found.due(104.9) == [], "the batch gathers for hold_s after its first decision"
    out = found.due(105.0)
    assert len(out) == 1, "the quorum (3 of 20 monitored): one fleet episode"
    fleet = out[0]
    assert fleet.model == FLEET and fleet.version == "7"
    assert fleet.partitions == tuple((partition(i), "3") for i in (1, 2, 3, 4))
    drifted = {f.feature for f in fleet.features if f.drifted}
    assert drifted == {"weather", "rain"}
    assert fleet.reasons[0].startswith("4 partitions of fleet arrivals drifted within 4 s")
    assert "'weather' drifted in 3 of them" in fleet.reasons[1]
    assert fleet.live_rows == 1200 and fleet.window_start == 70.0 and fleet.window_end == 104.0
    assert found.due(200.0) == [] and found.held(FLEET) == []


def test_an_isolated_partition_drift_goes_out_alone_after_the_hold() -> None:
    found = episodes()
    alone = decision(partition(1), 100.0)
    assert found.hold(FLEET, alone, 100.0) == []
    assert found.due(104.9) == []
    assert found.due(105.0) == [alone], "as before fleets, only hold_s later"
    assert found.open_episode(FLEET, 105.0) is None


def test_the_quorum_is_a_share_of_the_monitored_partitions() -> None:
    found = episodes(monitored=100)  # quorum max(3, 10) = 10
    for i in range(5):
        assert found.hold(FLEET, decision(partition(i), 100.0), 100.0) == []
    released = found.due(105.0)
    assert [d.model for d in released] == [partition(i) for i in range(5)]
    assert all(not d.partitions for d in released), "five of 100 is not a fleet-wide change"


def test_early_ones_already_out_count_and_the_held_ones_are_grouped() -> None:
    found = episodes(monitored=50)  # quorum 5
    for i in range(2):
        found.hold(FLEET, decision(partition(i), 100.0), 100.0)
    assert len(found.due(105.0)) == 2  # out alone: no quorum within their hold
    for i in range(2, 5):
        assert found.hold(FLEET, decision(partition(i), 110.0 + i), 110.0 + i) == []
    out = found.due(117.0)  # five within the window: the quorum, three of them in the batch
    assert len(out) == 1 and [p for p, _ in out[0].partitions] == [partition(i) for i in (2, 3, 4)]


def test_an_open_fleet_episode_grows_with_the_partitions_that_drift_later() -> None:
    found = episodes()
    for i in range(3):
        found.hold(FLEET, decision(partition(i), 100.0), 100.0)
    assert len(found.due(105.0)) == 1
    first = found.open_episode(FLEET, 105.0)
    assert first is not None
    for i in range(3, 5):
        assert found.hold(FLEET, decision(partition(i), 120.0 + i), 120.0 + i) == []
    assert found.due(127.9) == [], "joiners are gathered for hold_s"
    grown = found.due(128.0)
    assert len(grown) == 1 and grown[0].model == FLEET
    assert grown[0].episode_id == first.episode_id, "the same episode, grown"
    assert [p for p, _ in grown[0].partitions] == [partition(3), partition(4)], "only the new"
    assert grown[0].reasons[0] == f"joins fleet episode {first.episode_id}"
    assert found.open_episode(FLEET, 128.0) == first, "joining does not extend the episode"
    found.close(FLEET)  # the global model deployed a new version: the change still spreads
    found.hold(FLEET, decision(partition(9), 200.0), 200.0)
    one = found.due(205.0)
    assert len(one) == 1 and one[0].episode_id == first.episode_id, "even one joins"
    assert [p for p, _ in one[0].partitions] == [partition(9)]
    again = decision(partition(1), 300.0)  # listed already: its new version drifts again
    found.hold(FLEET, again, 300.0)
    assert found.due(305.0) == [again], "a member deciding again is its own episode"
    assert found.open_episode(FLEET, 105.0 + 600.0) is None, "episode_timeout_s still ends it"
    found.hold(FLEET, decision(partition(11), 706.0), 706.0)
    assert [d.model for d in found.due(711.0)] == [partition(11)], "no open episode: alone"


def test_a_restart_resumes_the_grown_episode_from_its_earliest_entry() -> None:
    found = episodes()
    found.resume(FLEET, "e1", 150.0, [partition(5)])  # a follow-up, listed before its opening
    found.resume(FLEET, "e1", 100.0, [partition(1), partition(2)])
    assert found.open_episode(FLEET, 120.0) == DriftEpisode("e1", 100.0)
    found.hold(FLEET, decision(partition(2), 130.0), 130.0)
    found.hold(FLEET, decision(partition(7), 130.0), 130.0)
    out = found.due(135.0)
    assert [(d.model, d.episode_id) for d in out] == [
        (FLEET, "e1"),
        (partition(2), "own-" + partition(2)),
    ]
    assert [p for p, _ in out[0].partitions] == [partition(7)]


def test_a_city_wide_shift_spread_over_three_minutes_is_one_fleet_episode() -> None:
    """40 partitions hit by one shift, each deciding when its own rows show it (the busiest
    first, close together; the quiet ones up to 3 minutes later, seconds apart: far beyond
    fleet_window_s), one episode id for all."""
    rng = np.random.default_rng(11)
    reference = pd.DataFrame({"x": rng.normal(size=3000)})
    profile = build_profile("m", "1", reference, pd.Series(["y"] * 3000))
    sizes = FleetSizes()
    monitors = ModelMonitors(DriftPolicy(), scale=sizes.scale)
    fleets = FleetDispatch(monitors, sizes, RULES)
    names = [partition(i) for i in range(40)]
    for model in names:
        monitors.switch(model, "1", profile)
        fleets.saw(model, 0.0)
        stable = pd.DataFrame({"x": rng.normal(0.0, 1.0, 250)})
        assert monitors.observe(model, "1", stable, 1.0) is None
    shifted_at = {model: 100.0 + 180.0 * (i / 39) ** 2 for i, model in enumerate(names)}
    published: list[DriftDecision] = []
    decided = set()
    for second in range(100, 400):
        now = float(second)
        for model, at in shifted_at.items():
            if at <= now and model not in decided:  # its rows show the shift from now on
                chunk = pd.DataFrame({"x": rng.normal(3.0, 1.0, 50)})
                found = monitors.observe(model, "1", chunk, now)
                if found is not None:
                    decided.add(model)
                    published += fleets.decided(found, now)
        published += fleets.tick(now)
    assert decided == set(names)
    spread = max(d.decided_at for d in published) - min(d.decided_at for d in published)
    assert spread > 2 * RULES.window_s, "the drifts are spread over minutes"
    assert {d.model for d in published} == {FLEET}, "no partition went out alone"
    assert len({d.episode_id for d in published}) == 1, "one fleet episode"
    listed = [p for d in published for p, _ in d.partitions]
    assert sorted(listed) == sorted(names), "every partition listed exactly once"
    for model in names:
        assert monitors.report(model, 400.0).open_episode_id == published[0].episode_id


def test_a_clean_stop_publishes_everything_held() -> None:
    found = episodes(monitored=100)
    for i in range(2):
        found.hold(FLEET, decision(partition(i), 100.0), 100.0)
    assert [d.model for d in found.flush(101.0)] == [partition(0), partition(1)]
    assert found.flush(102.0) == []


def test_plain_models_are_never_held_and_partitions_take_the_fleet_episode_id() -> None:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.normal(size=3000)})
    profile = build_profile("m", "1", reference, pd.Series(["y"] * 3000))
    sizes = FleetSizes()
    monitors = ModelMonitors(DriftPolicy(), scale=sizes.scale)
    fleets = FleetDispatch(monitors, sizes, RULES)
    plain = decision("churn", 50.0)
    assert fleets.decided(plain, 50.0) == [plain]
    drifting = [partition(i) for i in range(4)]
    quiet = [partition(i) for i in range(4, 10)]
    for model in drifting + quiet:
        monitors.switch(model, "1", profile)
        fleets.saw(model, 0.0)
    for model in drifting:  # a city-wide shift of x: each drifting partition decides
        for start in range(0, 600, 50):
            chunk = pd.DataFrame({"x": rng.normal(3.0 if start >= 200 else 0.0, 1.0, 50)})
            found = monitors.observe(model, "1", chunk, 100.0 + start / 100)
            if found is not None:
                assert fleets.decided(found, 100.0 + start / 100) == []
    assert fleets.episodes.held(FLEET) == drifting
    out = fleets.tick(110.0)
    assert len(out) == 1 and [p for p, _ in out[0].partitions] == drifting
    for model in drifting:
        assert monitors.report(model, 110.0).open_episode_id == out[0].episode_id
        # more drifted rows: the partition's episode (the fleet's) mutes it
        chunk = pd.DataFrame({"x": rng.normal(3.0, 1.0, 300)})
        assert monitors.observe(model, "1", chunk, 120.0) is None
    assert fleets.tick(200.0) == [] and fleets.episodes.held(FLEET) == []

    history = DriftHistory()
    history.record(out[0])
    assert history.latest_episode(drifting[0]) == (out[0].episode_id, "1", out[0].decided_at)
    assert [e.decision.model for e in history.entries(drifting[0])] == [FLEET]


def test_fleet_decision_keeps_the_strongest_evidence_per_test() -> None:
    members = [
        decision(partition(1), 10.0, p=1e-7),
        decision(partition(2), 11.0, p=1e-12),
        decision(partition(3), 12.0, p=1e-8),
    ]
    found = fleet_decision(FLEET, "", members, 13.0)
    weather = next(f for f in found.features if f.feature == "weather")
    assert weather.p_value == 1e-12 and weather.drifted
    hour = next(f for f in found.features if f.feature == "hour")
    assert not hour.drifted
    assert found.decided_at == 13.0 and found.version == ""
