"""The join's journal: what monitoring writes to its changelog (driftloop.monitoring.pending)
and reads back after a crash, so predictions awaiting labels survive and no label counts twice.
The changelog itself runs on real Kafka in
tests/integration/monitoring/test_monitoring_restart_pending.py."""

from __future__ import annotations

import pytest

from driftloop.services.monitoring.core.performance import JOINED, PredictionJoin

pytestmark = pytest.mark.unit


def latest(changes: list[tuple[str, object]]) -> dict[str, object]:
    """What a compacted topic keeps: the latest state per id, tombstones (None) dropped."""
    kept: dict[str, object] = {}
    for request_id, state in changes:
        kept.pop(request_id, None)
        if state is not None:
            kept[request_id] = state
    return kept


def test_every_state_change_is_journalled_in_order() -> None:
    join = PredictionJoin(capacity=10, journal=True)
    join.add("1", ["a", "b", "c"], ["x", "y", "z"], [1.0, 2.0, 3.0])
    assert join.take(["b"]) == [("1", "y", 2.0)]
    assert join.drain() == [
        ("a", ("1", "x", 1.0)),
        ("b", ("1", "y", 2.0)),
        ("c", ("1", "z", 3.0)),
        ("b", JOINED),
    ]
    assert join.drain() == []


def test_restored_join_behaves_as_the_one_that_crashed() -> None:
    before = PredictionJoin(capacity=10, journal=True)
    before.add("1", ["a", "b", "c"], ["x", "y", "z"], [1.0, 2.0, 3.0])
    before.take(["b"])
    after = PredictionJoin(capacity=10, journal=True)
    after.restore(list(latest(before.drain()).items()))
    assert len(after) == 2 and after.drain() == []  # restoring writes nothing back
    # a label replayed after the restart is a duplicate, never a second join
    assert after.take(["b"]) == [None] and after.duplicates == 1
    # a replayed prediction log does not bring a joined id back to waiting
    after.add("1", ["b"], ["y"], [2.0])
    assert len(after) == 2
    assert after.take(["a", "c"]) == [("1", "x", 1.0), ("1", "z", 3.0)]


def test_eviction_writes_tombstones_and_restore_keeps_capacity() -> None:
    join = PredictionJoin(capacity=2, journal=True)
    join.add("1", ["a", "b", "c"], ["x", "y", "z"], [1.0, 2.0, 3.0])
    changes = join.drain()
    assert ("a", None) in changes
    assert set(latest(changes)) == {"b", "c"}
    small = PredictionJoin(capacity=1, journal=True)
    small.restore([("b", ("1", "y", 2.0)), ("c", ("1", "z", 3.0))])
    assert len(small) == 1 and small.take(["c"]) == [("1", "z", 3.0)]
    assert small.drain() == [("c", JOINED)]
