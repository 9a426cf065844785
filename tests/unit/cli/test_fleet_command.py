"""`driftloop fleet` and the fleet lines of `driftloop models`: partitions sorted by recent drift,
a fleet episode counted for each partition it names, "drifting" only while the drifted version
still serves."""

from __future__ import annotations

import pytest

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.monitoring.v1 import monitoring_pb2
from driftloop.shared.cli.commands.fleet import fleet_rows, latest_drifts, summary_lines
from driftloop.shared.registry_types import Model, TrainingSpec

pytestmark = pytest.mark.unit

FLEET = Model("arrivals", "trips", "delay_s", TrainingSpec(partition_by=("route_id",)), "3")


def entry(at: int, model: str, version: str, *partitions: str) -> monitoring_pb2.DriftHistoryEntry:
    found = monitoring_pb2.DriftHistoryEntry(
        event=events_pb2.DriftDetected(
            model=model, version=version, episode_id=f"ep-{at}", partitions=list(partitions)
        )
    )
    found.decided_at.seconds = at
    return found


def partition(route: int, production: str, latest: int) -> Model:
    return Model(
        f"arrivals/route_id={route}",
        "trips",
        "delay_s",
        FLEET.spec,
        production,
        None,
        latest,
        fleet="arrivals",
    )


def test_partitions_are_sorted_by_recent_drift_and_drifting_until_replaced() -> None:
    drifts = latest_drifts(
        [
            entry(100, "arrivals/route_id=1", "2"),
            entry(300, "arrivals/route_id=2", "1"),
            entry(200, "arrivals", "3", "arrivals/route_id=3"),
            entry(50, "arrivals/route_id=2", "0"),  # older: the latest one wins
        ]
    )
    rows = fleet_rows(
        [partition(1, "3", 3), partition(2, "1", 1), partition(3, "", 1), partition(4, "1", 1)],
        drifts,
    )
    assert [r.name.rsplit("=", 1)[1] for r in rows] == ["2", "3", "1", "4"]
    by_route = {r.name.rsplit("=", 1)[1]: r for r in rows}
    assert by_route["2"].drifting  # still serves version 1, which drifted
    assert not by_route["1"].drifting  # version 3 replaced the drifted version 2
    assert by_route["3"].last_drift is not None and by_route["3"].last_drift.episode_id == "ep-200"
    assert by_route["4"].as_dict()["last_drift_at"] is None
    assert by_route["2"].as_dict()["last_drift_at"] == "1970-01-01T00:05:00Z"


def test_models_lists_a_fleet_as_one_line() -> None:
    plain = Model("churn", "customers", "churned", TrainingSpec(), "2", None, 2)
    lines = summary_lines([FLEET, partition(1, "1", 1), partition(2, "", 1), plain])
    assert lines[0].startswith("arrivals: dataset=trips production=3")
    assert "fleet by route_id: 2 partitions, 1 with their own production version" in lines[0]
    assert lines[1] == "churn: dataset=customers production=2 latest=2"
    assert len(lines) == 2
