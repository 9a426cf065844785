"""Shadow evidence in monitoring: shadow prediction logs stay out of production's drift windows,
labels score the shadow and production on the same request ids, evidence goes to the registry
every N labelled pairs, and the registry's verdict (wait, decided, stale) is applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from registry_fake import FakeRegistry
from sklearn.metrics import f1_score
from structlog.testing import capture_logs

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.monitoring.adapters.kafka import MonitoringHandler
from driftloop.services.monitoring.adapters.registry import RegistryEvidence, RegistryProfiles
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.services.monitoring.core.shadow import (
    ShadowComparisons,
    ShadowMonitor,
    live_metrics,
)
from driftloop.shared.bus import envelope
from driftloop.shared.errors import Unavailable
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.profile import build_profile
from driftloop.shared.records import table_to_ipc
from driftloop.shared.registry_types import ModelVersion, ShadowVerdict

pytestmark = pytest.mark.unit
RNG = np.random.default_rng(5)
FRAME = pd.DataFrame({"x": RNG.normal(size=400)})
PROFILE = build_profile("m", "1", FRAME, pd.Series(np.where(FRAME["x"] > 0, "a", "b")))


def registry(tmp_path: Path, fake: FakeRegistry | None = None) -> FakeRegistry:
    """Model m: production version 1 (its profile in a store under tmp_path), shadow 2."""
    fake = fake or FakeRegistry()
    fake.put_version(ModelVersion("m", "1", profile_uri="profiles/m/1.json"), alias="production")
    fake.put_version(ModelVersion("m", "2"), alias="shadow")
    return fake


def verdict(outcome: str, reason: str, still_shadow: bool) -> ShadowVerdict:
    status = "shadow" if still_shadow else "production"
    return ShadowVerdict(outcome, reason, 50, ModelVersion("m", "2", status=status))


WAIT = verdict("waiting", "need more", True)


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


async def handler(
    fake: FakeRegistry, tmp_path: Path
) -> tuple[MonitoringHandler, ModelMonitors, ShadowMonitor]:
    store = LocalObjectStore(tmp_path / "store")
    store.put("profiles/m/1.json", PROFILE.to_json())
    monitors = ModelMonitors(DriftPolicy())
    shadow = ShadowMonitor(ShadowComparisons(report_every=50), RegistryEvidence(fake))  # type: ignore[arg-type]
    profiles = RegistryProfiles(fake, store)  # type: ignore[arg-type]
    h = MonitoringHandler(monitors, _NoPublisher(), profiles, shadow=shadow)  # type: ignore[arg-type]
    await h.reconcile()
    return h, monitors, shadow


class _NoPublisher:
    def event(self, payload: Any, **kw: Any) -> Any:
        raise AssertionError("no drift expected")


async def test_shadow_logs_skip_drift_windows_and_labels_score_both_on_the_same_ids(
    tmp_path: Path,
) -> None:
    fake = registry(tmp_path)
    fake.state.verdicts += [WAIT, verdict("promoted", "live accuracy 1.000 >= ...", False)]
    h, monitors, shadow = await handler(fake, tmp_path)
    await h.handle(log("1", ids(0, 20), ["a"] * 20))  # before any shadow: not compared
    await h.handle(log("2", ids(0, 20), ["b"] * 20, shadow=True))
    await h.handle(log("1", ids(20, 100), ["a"] * 50 + ["b"] * 50))
    await h.handle(log("2", ids(20, 100), ["a"] * 100, shadow=True))
    monitor = monitors.get("m")
    assert (monitor.rows_seen, monitor.rows_ignored) == (120, 0)  # the shadow's rows: none

    await h.handle(labels(ids(0, 20), ["b"] * 20))  # no production answers kept for these
    assert fake.state.evidence == []
    await h.handle(labels(ids(20, 50), ["a"] * 50))
    [first] = fake.state.evidence
    assert first.actor == "monitoring"
    assert (first.version, first.champion_version, first.labelled) == ("2", "1", 50)
    assert first.shadow_metrics["accuracy"] == 1.0 and first.champion_metrics["accuracy"] == 1.0
    await h.handle(labels(ids(70, 49), ["a"] * 49))
    assert len(fake.state.evidence) == 1  # 49 new pairs < report_every
    await h.handle(labels(ids(119, 1), ["a"]))
    second = fake.state.evidence[1]
    assert second.labelled == 100
    assert second.shadow_metrics["accuracy"] == 1.0
    assert second.champion_metrics["accuracy"] == 0.5  # production said "b" for r70..r119
    assert shadow.comparisons.get("m") is None  # decided: forgotten
    await h.handle(log("2", ids(200, 5), ["a"] * 5, shadow=True))  # late logs of it: ignored
    assert shadow.comparisons.get("m") is None


async def test_an_unreachable_registry_loses_no_labels_and_stale_evidence_restarts(
    tmp_path: Path,
) -> None:
    fake = registry(tmp_path)
    h, _, shadow = await handler(fake, tmp_path)
    fake.fail_next(Unavailable("registry down"))
    fake.state.verdicts.append(verdict("stale", "production is version 3", True))
    await h.handle(log("2", ids(0, 120), ["a"] * 120, shadow=True))
    await h.handle(log("1", ids(0, 120), ["a"] * 120))
    await h.handle(labels(ids(0, 50), ["a"] * 50))  # registry down: kept
    await h.handle(labels(ids(50, 10), ["a"] * 10))
    assert fake.calls["ReportShadowEvidence"] == 2
    assert [e.labelled for e in fake.state.evidence] == [60]
    comparison = shadow.comparisons.get("m")
    assert comparison is not None and comparison.truth == [] and not comparison.champion_version
    await h.handle(log("1", ids(200, 10), ["a"] * 10))  # production answers again: restarts
    assert comparison.champion_version == "1"


async def test_a_refused_token_is_an_error_not_an_outage_and_labels_still_count(
    tmp_path: Path,
) -> None:
    fake = registry(tmp_path, FakeRegistry(token="right", presented="wrong"))
    h, monitors, shadow = await handler(fake, tmp_path)
    await h.handle(log("2", ids(0, 60), ["a"] * 60, shadow=True))
    await h.handle(log("1", ids(0, 60), ["a"] * 60))
    with capture_logs() as logged:
        await h.handle(labels(ids(0, 50), ["a"] * 50))  # no exception: not dead-lettered
    events = {e["event"]: e for e in logged}
    assert "shadow_evidence_not_reported" not in events, "a wrong token is not an outage"
    refused = events["shadow_evidence_refused"]
    assert refused["log_level"] == "error" and refused["error_type"] == "Unauthenticated"
    assert fake.calls["ReportShadowEvidence"] == 1, "asked once, not retried"
    comparison = shadow.comparisons.get("m")
    assert comparison is not None and len(comparison.truth) == 50, "the evidence is kept"
    labelled = monitors.get("m").report().performance.labelled_rows
    assert labelled == 50, "the labels still fed the drift monitor"


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


def test_evidence_carries_the_paired_counts_for_mcnemar() -> None:
    c = ShadowComparisons(report_every=4)
    request_ids = [f"r{i}" for i in range(4)]
    c.add_shadow("m", "2", request_ids, ["a", "a", "b", "b"])
    c.add_production("m", "1", request_ids, ["a", "b", "a", "b"])
    found = c.add_labels("m", request_ids, ["a", "a", "a", "a"])
    assert found is not None and found.labelled == 4
    # r1: only the shadow is right; r2: only production; r0 both, r3 neither
    assert (found.shadow_only_right, found.champion_only_right) == (1, 1)
