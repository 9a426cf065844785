"""Label values from outside are bounded: a producer inventing dataset names cannot grow a
service's metrics without end (#21)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from driftloop.shared.metric_labels import OTHER, BoundedLabel

pytestmark = pytest.mark.unit


def test_values_past_the_limit_are_counted_as_other() -> None:
    registry = CollectorRegistry()
    rows = Counter("rows_total", "rows", ["dataset"], registry=registry)
    dataset = BoundedLabel("dataset", limit=3)
    for i in range(1000):
        rows.labels(dataset(f"ds{i}")).inc()
    rows.labels(dataset("ds1")).inc()  # a value already seen keeps its own series
    series = {
        s.labels["dataset"]: s.value for s in rows.collect()[0].samples if s.name == "rows_total"
    }
    assert series == {"ds0": 1, "ds1": 2, "ds2": 1, OTHER: 997}
