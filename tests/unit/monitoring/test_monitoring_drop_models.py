"""Forgetting models whose partition moved to another monitoring instance (ModelMonitors.drop,
FleetDispatch.drop): their monitors, restored states and fleet request ids go, the others stay
as they were, and a model dropped then restored again is monitored from its restored state."""

from __future__ import annotations

import numpy as np
import pytest
from test_monitoring_fleet_labels import FLEET, P1, P2, dispatch, labelled, logged, observe

from driftloop.services.monitoring.core.performance import JOINED

pytestmark = pytest.mark.unit


def test_drop_forgets_the_models_and_their_fleet_request_ids_only() -> None:
    fleets = dispatch()
    rng = np.random.default_rng(3)
    one, two = logged(rng, 30), logged(rng, 20)
    observe(fleets, P1, one)
    observe(fleets, P2, two)
    fleets.monitors.restore_pending("churn", [("r1", ("1", "1", 5.0))])

    assert fleets.drop([P1, "churn", "never-seen"]) == [P1, "churn"]

    assert not fleets.monitors.knows(P1) and fleets.monitors.knows(P2)
    assert fleets.monitors.restored_models() == []
    index = fleets.indexes.index(FLEET)
    assert len(index) == 20
    assert all(index.get(i) is None for i in one["_request_id"])
    assert all(index.get(i) == P2 for i in two["_request_id"])
    # the kept partition still joins its labels; the dropped one's go to the fleet's monitor
    ids = two["_request_id"].tolist() + one["_request_id"].tolist()[:5]
    routed = {m: len(i) for m, i, _ in fleets.route(FLEET, ids, ["1"] * len(ids))}
    assert routed == {P2: 20, FLEET: 5}
    for target, t_ids, t_labels in fleets.route(FLEET, ids[:20], ["1"] * 20):
        fleets.monitors.observe_labels(target, t_ids, t_labels, 2000.0)
    assert labelled(fleets, P2) == 20


def test_a_dropped_model_restored_again_starts_from_its_restored_state() -> None:
    fleets = dispatch()
    rng = np.random.default_rng(4)
    frame = logged(rng, 10)
    observe(fleets, P1, frame)
    ids = frame["_request_id"].tolist()
    states = [(i, ("1", "1", 1000.0)) for i in ids[1:]] + [(ids[0], JOINED)]
    fleets.drop([P1])

    fleets.monitors.restore_pending(P1, states)
    assert fleets.restore({P1: states}) == 10
    assert fleets.monitors.restored_models() == [P1]
    profile = fleets.monitors.get(P2).profile
    fleets.monitors.switch(P1, "1", profile)  # its next log loads its reference

    assert fleets.monitors.report(P1).performance.pending_predictions == 9
    for target, t_ids, t_labels in fleets.route(FLEET, ids, ["1"] * 10):
        fleets.monitors.observe_labels(target, t_ids, t_labels, 2000.0)
    performance = fleets.monitors.report(P1).performance
    assert performance.labelled_rows == 9 and performance.duplicate_labels == 1
    assert performance.unmatched_labels == 0 and performance.pending_predictions == 0
