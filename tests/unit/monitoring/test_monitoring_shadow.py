"""Shadow evidence in monitoring: shadow prediction logs stay out of production's drift windows,
labels score the shadow and production on the same request ids, evidence goes to the registry
every N labelled pairs, and the registry's verdict (wait, decided, stale) is applied."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import f1_score

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.monitoring.adapters.kafka import MonitoringHandler
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.services.monitoring.core.shadow import (
    Evidence,
    ShadowComparisons,
    ShadowMonitor,
    Verdict,
    live_metrics,
)
from driftloop.shared.bus import envelope
from driftloop.shared.errors import Unavailable
from driftloop.shared.profile import ReferenceProfile, build_profile
from driftloop.shared.records import table_to_ipc

pytestmark = pytest.mark.unit
RNG = np.random.default_rng(5)
FRAME = pd.DataFrame({"x": RNG.normal(size=400)})
PROFILE = build_profile("m", "1", FRAME, pd.Series(np.where(FRAME["x"] > 0, "a", "b")))


class Profiles:
    async def version_profile(self, model: str, version: str) -> ReferenceProfile:
        return PROFILE

    async def production_profile(self, model: str) -> tuple[str, ReferenceProfile] | None:
        return "1", PROFILE

    async def production_profiles(self) -> list[tuple[str, str, ReferenceProfile]]:
        return [("m", "1", PROFILE)]


class Sink:
    def __init__(self, *verdicts: Verdict) -> None:
        self.verdicts = list(verdicts)
        self.reports: list[Evidence] = []

    async def report(self, evidence: Evidence) -> Verdict:
        self.reports.append(evidence)
        verdict = self.verdicts.pop(0)
        if verdict.outcome == "down":
            raise Unavailable("registry down")
        return verdict


WAIT = Verdict("waiting", "need more", True)


def log(version: str, ids: list[str], preds: list[str], shadow: bool = False) -> Any:
    frame = pd.DataFrame(
        {"x": RNG.normal(size=len(ids)), "_request_id": ids, "_prediction": preds, "_ts": 1.0}
    )
    payload = events_pb2.PredictionLog(
        model="m",
        version=version,
        arrow_ipc=table_to_ipc(pa.Table.from_pandas(frame)),
        row_count=len(ids),
        shadow=shadow,
    )
    return envelope.new_event("serving", payload)


def labels(ids: list[str], values: list[str]) -> Any:
    payload = events_pb2.LabelBatch(model="m", request_ids=ids, labels=values)
    return envelope.new_event("labels", payload)


def ids(start: int, n: int) -> list[str]:
    return [f"r{i}" for i in range(start, start + n)]


async def handler(sink: Sink) -> tuple[MonitoringHandler, ModelMonitors, ShadowMonitor]:
    monitors = ModelMonitors(DriftPolicy())
    shadow = ShadowMonitor(ShadowComparisons(report_every=50), sink)
    h = MonitoringHandler(monitors, _NoPublisher(), Profiles(), shadow=shadow)  # type: ignore[arg-type]
    await h.reconcile()
    return h, monitors, shadow


class _NoPublisher:
    def event(self, payload: Any, **kw: Any) -> Any:
        raise AssertionError("no drift expected")


async def test_shadow_logs_skip_drift_windows_and_labels_score_both_on_the_same_ids() -> None:
    sink = Sink(WAIT, Verdict("promoted", "live accuracy 1.000 >= ...", False))
    h, monitors, shadow = await handler(sink)
    await h.handle(log("1", ids(0, 20), ["a"] * 20))  # before any shadow: not compared
    await h.handle(log("2", ids(0, 20), ["b"] * 20, shadow=True))
    await h.handle(log("1", ids(20, 100), ["a"] * 50 + ["b"] * 50))
    await h.handle(log("2", ids(20, 100), ["a"] * 100, shadow=True))
    monitor = monitors.get("m")
    assert (monitor.rows_seen, monitor.rows_ignored) == (120, 0)  # the shadow's rows: none

    await h.handle(labels(ids(0, 20), ["b"] * 20))  # no production answers kept for these
    assert sink.reports == []
    await h.handle(labels(ids(20, 50), ["a"] * 50))
    [first] = sink.reports
    assert (first.version, first.champion_version, first.labelled) == ("2", "1", 50)
    assert first.shadow_metrics["accuracy"] == 1.0 and first.champion_metrics["accuracy"] == 1.0
    await h.handle(labels(ids(70, 49), ["a"] * 49))
    assert len(sink.reports) == 1  # 49 new pairs < report_every
    await h.handle(labels(ids(119, 1), ["a"]))
    second = sink.reports[1]
    assert second.labelled == 100
    assert second.shadow_metrics["accuracy"] == 1.0
    assert second.champion_metrics["accuracy"] == 0.5  # production said "b" for r70..r119
    assert shadow.comparisons.get("m") is None  # decided: forgotten
    await h.handle(log("2", ids(200, 5), ["a"] * 5, shadow=True))  # late logs of it: ignored
    assert shadow.comparisons.get("m") is None


async def test_an_unreachable_registry_loses_no_labels_and_stale_evidence_restarts() -> None:
    stale = Verdict("stale", "production is version 3", True)
    sink = Sink(Verdict("down", "", True), stale)
    h, _, shadow = await handler(sink)
    await h.handle(log("2", ids(0, 120), ["a"] * 120, shadow=True))
    await h.handle(log("1", ids(0, 120), ["a"] * 120))
    await h.handle(labels(ids(0, 50), ["a"] * 50))  # registry down: kept
    await h.handle(labels(ids(50, 10), ["a"] * 10))
    assert [e.labelled for e in sink.reports] == [50, 60]
    comparison = shadow.comparisons.get("m")
    assert comparison is not None and comparison.truth == [] and not comparison.champion_version
    await h.handle(log("1", ids(200, 10), ["a"] * 10))  # production answers again: restarts
    assert comparison.champion_version == "1"


def test_live_metrics_match_scikit_learn() -> None:
    truth = list(RNG.choice(["a", "b", "c"], size=300))
    predicted = list(RNG.choice(["a", "b", "d"], size=300))
    found = live_metrics(truth, predicted)
    assert found["accuracy"] == pytest.approx(np.mean(np.array(truth) == np.array(predicted)))
    assert found["f1_macro"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert live_metrics([], []) == {}


def test_comparisons_are_bounded() -> None:
    c = ShadowComparisons(capacity=10, report_every=1)
    c.add_shadow("m", "2", ids(0, 25), ["a"] * 25)
    c.add_production("m", "1", ids(0, 25), ["a"] * 25)
    comparison = c.get("m")
    assert comparison is not None
    assert len(comparison.shadow) == 10 and len(comparison.champion) == 10
    assert c.add_labels("m", ids(0, 15), ["a"] * 15) is None  # all forgotten
    evidence = c.add_labels("m", ids(15, 10), ["a"] * 10)
    assert evidence is not None and evidence.labelled == 10
    c.add_shadow("m", "3", ids(0, 2), ["a"] * 2)  # a new shadow replaces the comparison
    replaced = c.get("m")
    assert replaced is not None and replaced.version == "3" and replaced.truth == []
