"""Labels for fleets (core/fleet.py, core/fleet_dispatch.py): a fleet's labels reach the
partition monitor whose model answered each request, the rest the fleet's own monitor; labels
that came before their partition's log are handed over; the index is bounded fleet-wide and
rebuilt from the pending-join changelog after a restart."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.fleet import (
    FleetIndexes,
    RequestIndex,
    check_partition_log,
    fleet_of,
)
from driftloop.services.monitoring.core.fleet_dispatch import FleetDispatch
from driftloop.services.monitoring.core.fleet_episodes import FleetEpisodeRules
from driftloop.services.monitoring.core.fleet_thresholds import FleetSizes
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.services.monitoring.core.performance import JOINED
from driftloop.shared.errors import InvalidInput
from driftloop.shared.profile import build_profile

pytestmark = pytest.mark.unit

FLEET = "arrivals"
P1, P2 = f"{FLEET}/route_id=1", f"{FLEET}/route_id=2"


def rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    frame = pd.DataFrame({"x": rng.normal(0.0, 1.0, n)})
    frame["_prediction"] = np.where(frame["x"] > 0, "1", "0")
    return frame


def logged(rng: np.random.Generator, n: int) -> pd.DataFrame:
    frame = rows(rng, n)
    frame["_request_id"] = [uuid.uuid4().hex for _ in range(n)]
    frame["_ts"] = 1000.0 + np.arange(n)
    return frame


def dispatch(capacity: int = 1000) -> FleetDispatch:
    rng = np.random.default_rng(1)
    reference = rows(rng, 2000)
    profile = build_profile("m", "1", reference[["x"]], reference["_prediction"])
    policy = DriftPolicy(max_pending_predictions=capacity)
    sizes = FleetSizes()
    monitors = ModelMonitors(policy, journal=True, scale=sizes.scale)
    for model in (FLEET, P1, P2):
        monitors.switch(model, "1", profile)
    return FleetDispatch(monitors, sizes, FleetEpisodeRules())


def observe(fleets: FleetDispatch, model: str, frame: pd.DataFrame) -> None:
    """As the handler: the monitor observes the log, then the fleet indexes its ids."""
    fleets.monitors.observe(model, "1", frame, 2000.0)
    found = fleets.logged(model, FLEET, frame["_request_id"].tolist())
    if found.early_ids:
        fleets.monitors.observe_labels(model, found.early_ids, found.early_labels, 2000.0)


def labelled(fleets: FleetDispatch, model: str) -> int:
    return fleets.monitors.report(model).performance.labelled_rows


def send_labels(fleets: FleetDispatch, model: str, ids: list[str], labels: list[str]) -> None:
    for target, t_ids, t_labels in fleets.route(model, ids, labels):
        fleets.monitors.observe_labels(target, t_ids, t_labels, 2000.0)


def test_a_fleets_labels_reach_the_partition_that_answered_each_request() -> None:
    fleets = dispatch()
    rng = np.random.default_rng(2)
    one, two, global_ = logged(rng, 30), logged(rng, 20), logged(rng, 10)
    observe(fleets, P1, one)
    observe(fleets, P2, two)
    fleets.monitors.observe(FLEET, "1", global_, 2000.0)  # the global model's rows: model=F
    batch = pd.concat([one, two, global_]).sample(frac=1.0, random_state=3)
    ids, labels = batch["_request_id"].tolist(), batch["_prediction"].tolist()
    routed = fleets.route(FLEET, ids, labels)
    assert {model: len(i) for model, i, _ in routed} == {P1: 30, P2: 20, FLEET: 10}
    send_labels(fleets, FLEET, ids, labels)
    assert (labelled(fleets, P1), labelled(fleets, P2), labelled(fleets, FLEET)) == (30, 20, 10)
    for model in (P1, P2, FLEET):
        performance = fleets.monitors.report(model).performance
        assert performance.unmatched_labels == 0 and performance.pending_predictions == 0


def test_labels_addressed_to_a_partition_work_as_before() -> None:
    fleets = dispatch()
    frame = logged(np.random.default_rng(4), 12)
    observe(fleets, P1, frame)
    assert fleets.route(P1, ["a"], ["1"]) == [(P1, ["a"], ["1"])]
    send_labels(fleets, P1, frame["_request_id"].tolist(), frame["_prediction"].tolist())
    assert labelled(fleets, P1) == 12


def test_labels_before_their_partitions_log_are_handed_over_when_it_arrives() -> None:
    fleets = dispatch()
    frame = logged(np.random.default_rng(5), 15)
    ids, labels = frame["_request_id"].tolist(), frame["_prediction"].tolist()
    send_labels(fleets, FLEET, ids, labels)  # not indexed yet: the fleet's monitor holds them
    assert fleets.monitors.report(FLEET).performance.unmatched_labels == 15
    observe(fleets, P1, frame)
    assert labelled(fleets, P1) == 15
    assert fleets.monitors.report(FLEET).performance.unmatched_labels == 0


def test_the_index_is_bounded_per_fleet_and_partitions_forget_what_it_forgets() -> None:
    fleets = dispatch(capacity=50)
    rng = np.random.default_rng(6)
    first, second = logged(rng, 40), logged(rng, 40)
    observe(fleets, P1, first)
    observe(fleets, P2, second)  # 80 ids for a fleet that keeps 50: P1's oldest 30 go
    pending = [fleets.monitors.report(m).performance.pending_predictions for m in (P1, P2)]
    assert pending == [10, 40] and sum(pending) <= 50
    forgotten = [i for i, _ in fleets.monitors.drain_pending(P1) if _ is None]
    assert len(forgotten) == 30, "the changelog learns the partition forgot them"
    send_labels(fleets, FLEET, first["_request_id"].tolist(), first["_prediction"].tolist())
    assert labelled(fleets, P1) == 10, "only the ids still indexed reach the partition"


def test_the_index_is_rebuilt_from_the_changelog_oldest_first() -> None:
    states = {
        P1: [("a", ("1", "x", 3.0)), ("b", JOINED)],
        P2: [("c", ("1", "y", 1.0)), ("d", ("1", "z", 2.0))],
        "churn": [("e", ("1", "q", 0.0))],  # a plain model: not in any fleet's index
    }
    indexes = FleetIndexes(lambda _: 3)
    assert indexes.restore(states) == 3
    index = indexes.index(FLEET)
    # joined ids are the oldest, then by logged time: b, c, d, a -> capacity 3 keeps c, d, a
    assert [index.get(i) for i in "abcde"] == [P1, None, P2, P2, None]


def test_request_index_split_keeps_the_batch_order() -> None:
    index = RequestIndex(10)
    index.add(P1, ["a", "c"])
    index.add(P2, ["b"])
    routed, rest = index.split(["a", "b", "x", "c"], ["1", "2", "3", "4"])
    assert routed == {P1: (["a", "c"], ["1", "4"]), P2: (["b"], ["2"])}
    assert rest == {"": (["x"], ["3"])}


def test_a_log_naming_a_fleet_it_is_no_partition_of_is_refused() -> None:
    check_partition_log(P1, FLEET)
    for model, fleet in ((P1, "other"), (FLEET, FLEET), ("a/b", FLEET)):
        with pytest.raises(InvalidInput, match="not a partition"):
            check_partition_log(model, fleet)
    assert fleet_of(P1) == FLEET and fleet_of("churn") is None and fleet_of("a/b") is None
