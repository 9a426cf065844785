"""Unit tests of a regressor's monitoring: labels parsed as numbers (the others counted and
ignored), MAE/RMSE against the reference holdout, the absolute-error CUSUM's false-alarm
control, river's Friedman streams (stationary: no alarm; FriedmanDrift: detected), numeric
prediction and target drift, reasons in words, change dating, report, HTML and shadow."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from registry_fake import FakeRegistry
from rich.console import Console
from river.datasets import synth
from structlog.testing import capture_logs

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.monitoring.adapters.kafka import MonitoringHandler
from driftloop.services.monitoring.adapters.pb import drift_detected_pb, drift_report_pb
from driftloop.services.monitoring.adapters.registry import RegistryEvidence, RegistryProfiles
from driftloop.services.monitoring.core import residual_calibration as friedman
from driftloop.services.monitoring.core.abs_error_cusum import (
    CAP,
    AbsErrorCusum,
    AbsErrorCusumBank,
    gamma_shape,
)
from driftloop.services.monitoring.core.decision import explain
from driftloop.services.monitoring.core.drift import DriftPolicy, FeatureDrift, PreparedReference
from driftloop.services.monitoring.core.monitor import DriftDecision, ModelMonitor, ModelMonitors
from driftloop.services.monitoring.core.regression import (
    RegressionReference,
    RegressionTracker,
    numeric_labels,
    regression_reference,
)
from driftloop.services.monitoring.core.shadow import ShadowComparisons, ShadowMonitor
from driftloop.shared.bus import envelope
from driftloop.shared.cli.commands.drift import render
from driftloop.shared.cli.commands.drift_html import render_html
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.profile import ReferenceProfile, build_profile
from driftloop.shared.records import table_to_ipc
from driftloop.shared.registry_types import ModelVersion, ShadowVerdict

pytestmark = pytest.mark.unit
FEATURES = [f"x{i}" for i in range(10)]


@pytest.fixture(scope="module")
def model() -> tuple[Any, RegressionReference]:
    """A HistGradientBoostingRegressor fitted on Friedman rows, and its holdout reference."""
    return friedman.fitted(0)


def profile_of(
    fitted: tuple[Any, RegressionReference], rows: int = 3000, seed: int = 7, **metrics: float
) -> ReferenceProfile:
    """The regressor's reference profile, as training builds it (features, numeric
    predictions and target, holdout metrics)."""
    estimator, reference = fitted
    x, y = friedman.friedman_rows(synth.Friedman(seed=seed), rows)
    found = {"mae": reference.mae, "rmse": reference.rmse, "holdout_rows": 1000.0, **metrics}
    return build_profile(
        "r",
        "1",
        pd.DataFrame(x, columns=FEATURES),
        pd.Series(estimator.predict(x)),
        target=pd.Series(y),
        metrics=found,
        task="regression",
    )


def feed(
    monitor: ModelMonitor,
    x: np.ndarray,
    predicted: np.ndarray,
    truth: np.ndarray,
    *,
    start: int = 0,
    batch: int = 250,
    labels: list[str] | None = None,
) -> list[tuple[int, DriftDecision]]:
    """Log rows (row i predicted at time i / 100: 10 ms apart), then their labels in batches;
    a batch's labels arrive at the time of its last row. Returns (row after the batch,
    decision)."""
    found = []
    for b in range(0, len(truth), batch):
        rows = slice(b, b + batch)
        n = len(truth[rows])
        ids = [str(start + b + i) for i in range(n)]
        frame = pd.DataFrame(x[rows], columns=FEATURES)
        frame["_prediction"] = predicted[rows]
        frame["_request_id"] = ids
        frame["_ts"] = (start + b + np.arange(n, dtype=float)) * 0.01
        at = (start + b + n) * 0.01
        decision = monitor.observe("1", frame, now=at)
        if decision is not None:
            found.append((start + b + n, decision))
        texts = labels[rows] if labels is not None else [str(v) for v in truth[rows]]
        decision = monitor.observe_labels(ids, texts, now=at)
        if decision is not None:
            found.append((start + b + n, decision))
    return found


def test_abs_error_cusum_matches_the_row_by_row_recursion_whatever_the_batching() -> None:
    rng = np.random.default_rng(1)
    z = np.r_[rng.normal(0, 1, 3000), rng.normal(0.6, 1, 2000)]
    z[100] = 1e9  # an absurd error moves it by CAP - k at most
    cusum = AbsErrorCusum(0.3, 1e6, 1.75)
    s, expected = 0.0, None
    for i, value in enumerate(z):
        s = max(0.0, s + min(value, CAP) - cusum.k)
        if s >= cusum.threshold:
            expected = i
            break
    chunks = np.array_split(z, 41)
    offsets = np.cumsum([0] + [len(c) for c in chunks])
    got = [cusum.update(chunk) for chunk in chunks]
    first = next(offsets[k] + g for k, g in enumerate(got) if g is not None)
    assert expected is not None and first == expected and expected >= 3000
    assert cusum.alarm_statistic >= cusum.threshold
    assert cusum.bound() == pytest.approx(math.exp(-cusum.theta * cusum.alarm_statistic))


@pytest.mark.parametrize("law", ["half-normal", "exponential"])
def test_abs_error_cusum_false_alarms_are_no_more_frequent_than_its_target(law: str) -> None:
    """The threshold's promise (one false alarm per arl0 rows) holds on absolute errors of a
    normal and of a Laplace residual: 2M in-control rows at a target of 2000 rows."""
    rng = np.random.default_rng(11)
    rows = 2_000_000
    errors = np.abs(rng.normal(size=rows)) if law == "half-normal" else rng.exponential(size=rows)
    z = (errors - errors.mean()) / errors.std()
    for shift in (0.13, 0.26, 0.66):
        cusum = AbsErrorCusum(shift, 2000.0, gamma_shape(errors.mean(), errors.std()))
        alarms = 0
        for chunk in np.array_split(z, 500):  # restarts after each alarm, as in service
            while (found := cusum.update(chunk)) is not None:
                alarms, chunk = alarms + 1, chunk[found + 1 :]
        assert rows / alarms >= 0.95 * 2000.0, (shift, alarms)


def test_stationary_friedman_stream_raises_no_alarm(model: tuple[Any, RegressionReference]) -> None:
    """100,000 labelled rows from river's Friedman generator (another seed than training's):
    no member of the bank alarms, and the live MAE sits at the reference's."""
    estimator, reference = model
    trial = friedman.stationary(estimator, reference, 1001, 100_000)
    assert trial.alarms == []
    bank = friedman.tracker(reference)
    x, y = friedman.friedman_rows(synth.Friedman(seed=1002), 2000)
    assert friedman.alarms(bank, estimator.predict(x), y) == []
    live = bank.live()
    assert live is not None and abs(live[0] - reference.mae) < 0.15 * reference.mae


@pytest.mark.parametrize(("kind", "most"), [("gra", 100), ("gsg", 300), ("lea", 25_000)])
def test_friedman_drift_is_detected_soon_after_the_change(
    model: tuple[Any, RegressionReference], kind: str, most: int
) -> None:
    """FriedmanDrift: global abrupt (gra) and gradual (gsg) changes within a few hundred rows;
    the local expanding one (lea: 1.6% of the space, then 5.4% after 20,000 rows) once its
    second stage makes the errors grow."""
    estimator, reference = model
    trial = friedman.drifting(estimator, reference, kind, 1001)
    assert trial.false_alarms == 0
    assert trial.delay is not None and trial.delay <= most, trial.alarms[:3]


def test_numeric_labels_split_numbers_from_the_rest() -> None:
    ids, kept, invalid = numeric_labels(
        ["a", "b", "c", "d", "e", "f", "g"], ["1.5", "-2e3", "abc", "nan", "inf", "", "1e999"]
    )
    assert (ids, kept) == (["a", "b"], ["1.5", "-2e3"])
    assert invalid == ["abc", "nan", "inf", "", "1e999"]


def test_labels_that_are_not_numbers_are_counted_logged_and_change_nothing(
    model: tuple[Any, RegressionReference],
) -> None:
    monitor = ModelMonitor("r", DriftPolicy(), "1", profile_of(model))
    x, y = friedman.friedman_rows(synth.Friedman(seed=3), 600)
    predicted = model[0].predict(x)
    feed(monitor, x, predicted, y)
    tracker = monitor.performance
    assert isinstance(tracker, RegressionTracker)
    before = (tracker.labelled_rows, tracker.live(), [c.statistic for c in tracker.cusum.members])  # type: ignore[union-attr]
    frame = pd.DataFrame(x[:3], columns=FEATURES).assign(
        _prediction=predicted[:3], _request_id=["n1", "n2", "n3"], _ts=1.0
    )
    monitor.observe("1", frame, now=700.0)
    pending = len(monitor._join)
    with capture_logs() as logged:
        decision = monitor.observe_labels(["n1", "n2", "n3"], ["ten", "NaN", "-inf"], now=700.0)
    assert decision is None and monitor.labels_invalid == 3
    after = (tracker.labelled_rows, tracker.live(), [c.statistic for c in tracker.cusum.members])  # type: ignore[union-attr]
    assert after == before and len(monitor._join) == pending and monitor.labels_unmatched == 0
    [event] = [e for e in logged if e["event"] == "labels_not_numbers"]
    assert event["invalid"] == 3 and event["example"] == "ten" and event["log_level"] == "warning"
    # the predictions still wait for a valid label
    monitor.observe_labels(["n1"], [str(y[0])], now=701.0)
    assert tracker.labelled_rows == before[0] + 1
    assert monitor.report(now=702.0).performance.invalid_labels == 3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=12), min_size=1, max_size=30))
def test_any_label_text_is_either_joined_as_a_number_or_counted_never_a_crash(
    texts: list[str],
) -> None:
    profile = build_profile(
        "r",
        "1",
        pd.DataFrame({"x": np.arange(50.0)}),
        pd.Series(np.arange(50.0)),
        target=pd.Series(np.arange(50.0)),
        metrics={"mae": 1.0, "rmse": 1.3},
        task="regression",
    )
    monitor = ModelMonitor("r", DriftPolicy(), "1", profile)
    ids = [str(i) for i in range(len(texts))]
    frame = pd.DataFrame(
        {"x": 1.0, "_prediction": 1.0, "_request_id": ids, "_ts": 0.0}, index=range(len(ids))
    )
    monitor.observe("1", frame, now=0.0)
    monitor.observe_labels(ids, texts, now=1.0)
    numbers = 0
    for text in texts:
        try:
            numbers += math.isfinite(float(text))
        except ValueError:
            pass
    assert monitor.performance.labelled_rows == numbers
    assert monitor.labels_invalid == len(texts) - numbers
    monitor.report(now=2.0)


def test_reference_from_the_profile_and_impossible_figures_give_none() -> None:
    def ref(**metrics: float) -> RegressionReference | None:
        profile = ReferenceProfile(
            model="r", version="1", rows=4000, features=[], metrics=metrics, task="regression"
        )
        return regression_reference(profile)

    found = ref(mae=10.0, rmse=12.5, holdout_rows=400.0)
    assert found is not None and found.source == "profile" and found.rows == 400
    assert found.sd == pytest.approx(7.5) and found.margin == pytest.approx(0.75)
    assert ref(mae=10.0, rmse=12.5) is not None and ref(mae=10.0, rmse=12.5).rows == 1000  # type: ignore[union-attr]
    assert ref(mae=10.0) is None and ref(mae=10.0, rmse=9.0) is None
    assert ref(mae=-1.0, rmse=2.0) is None and ref(mae=float("nan"), rmse=1.0) is None


def test_without_holdout_metrics_the_first_labels_become_the_reference(
    model: tuple[Any, RegressionReference],
) -> None:
    profile = profile_of(model)
    profile.metrics = {}
    monitor = ModelMonitor("r", DriftPolicy(label_burn_in_rows=500), "1", profile)
    x, y = friedman.friedman_rows(synth.Friedman(seed=4), 1000)
    predicted = model[0].predict(x)
    feed(monitor, x[:400], predicted[:400], y[:400])
    assert monitor.performance.reference is None
    assert monitor.report(now=1.0).performance.reference_mae is None
    feed(monitor, x[400:], predicted[400:], y[400:], start=400)
    reference = monitor.performance.reference
    assert isinstance(reference, RegressionReference) and reference.source == "live"
    assert reference.rows == 500 and abs(reference.mae - model[1].mae) < 0.2


def test_a_regressors_error_rise_is_decided_with_its_reasons_in_words(
    model: tuple[Any, RegressionReference],
) -> None:
    estimator, reference = model
    monitor = ModelMonitor("r", DriftPolicy(), "1", profile_of(model))
    stream = synth.FriedmanDrift(drift_type="gra", position=(2000, 10**9), seed=5)
    x, y = friedman.friedman_rows(stream, 4000)
    found = feed(monitor, x, estimator.predict(x), y)
    assert len(found) == 1, "one episode"
    at, decision = found[0]
    assert 2000 < at <= 2500
    evidence = {f.feature: f for f in decision.features}
    fired = {f.feature: f.test for f in decision.features if f.drifted}
    assert set(fired) <= {"_abs_error", "_abs_error_shift", "_abs_error_adwin"} and fired
    assert evidence["_mae"].threshold == pytest.approx(reference.mae)
    assert evidence["_mae"].statistic > reference.mae and evidence["_mae"].test == "mae"
    assert evidence["_rmse"].threshold == pytest.approx(reference.rmse)
    [reason] = decision.reasons
    mae = evidence["_mae"]
    assert reason.startswith(f"MAE {mae.statistic:.3g} vs reference {mae.threshold:.3g} (RMSE ")
    assert "crossed" in reason or "ADWIN" in reason
    event = drift_detected_pb(decision)
    assert list(event.reasons) == [reason]


def test_explain_names_each_kind_of_evidence() -> None:
    def f(feature: str, test: Any, statistic: float, p: float, threshold: float, drifted: bool):  # type: ignore[no-untyped-def]
        return FeatureDrift(feature, test, statistic, p, threshold, drifted)

    lines = explain(
        (
            f("x3", "ks", 0.31, 1e-9, 3e-5, True),
            f("_prediction", "ks", 0.2, 1e-7, 3e-5, True),
            f("plan", "chi2", 40.0, 1e-8, 3e-5, False),
            f("_mae", "mae", 14.2, 1e-12, 10.1, False),
            f("_rmse", "rmse", 17.9, 1e-10, 12.6, False),
            f("_abs_error", "abs_error_cusum", 131.0, 1e-9, 115.0, True),
            f("_label", "label_ks", 0.12, 1e-6, 1e-4, True),
        )
    )
    assert lines == (
        "feature 'x3' drifted: KS D 0.31, p=1e-09 < 3e-05",
        "predictions drifted: KS D 0.2, p=1e-07 < 3e-05",
        "MAE 14.2 vs reference 10.1 (RMSE 17.9 vs 12.6) on the latest labelled rows; "
        "absolute-error CUSUM 131 crossed 115",
        "target (label) distribution changed: KS D 0.12, p=1e-06 < 0.0001",
    )
    classifier = explain(
        (
            f("_accuracy", "accuracy", 0.71, 1e-9, 0.9, False),
            f("_error_rate", "cusum", 16.0, 1e-7, 15.2, True),
        )
    )
    assert classifier == ("accuracy 0.71 vs reference 0.9; error-rate CUSUM 16 crossed 15.2",)


def test_a_performance_drift_is_dated_back_towards_the_change() -> None:
    """The GLR's change-point estimate dates the rows a retrain may learn from on the
    absolute-error stream too: after the change, before the alarm."""
    rng = np.random.default_rng(12)
    n, change = 9000, 5000
    scale = np.r_[np.full(change, 1.0), np.full(n - change, 1.3)]
    truth = rng.normal(0, 1, n) * scale
    predicted = np.zeros(n)
    profile = build_profile(
        "r",
        "1",
        pd.DataFrame({f: rng.random(2000) for f in FEATURES}),
        pd.Series(rng.normal(0, 0.01, 2000)),
        target=pd.Series(rng.normal(0, 1, 2000)),
        metrics={"mae": math.sqrt(2 / math.pi), "rmse": 1.0, "holdout_rows": 5000.0},
        task="regression",
    )
    monitor = ModelMonitor("r", DriftPolicy(triggers=frozenset({"accuracy"})), "1", profile)
    x = rng.random((n, 10))
    found = feed(monitor, x, predicted, truth, batch=100)
    assert len(found) == 1
    alarm, decision = found[0]
    assert change < alarm < change + 2500
    since = decision.window_end * 100  # in rows
    assert change - 100 <= since < alarm - 100, "reaches back before the alarm"


def test_numeric_prediction_drift_is_a_ks_test_for_a_regressor_only(
    model: tuple[Any, RegressionReference],
) -> None:
    profile = profile_of(model)
    monitor = ModelMonitor("r", DriftPolicy(triggers=frozenset({"prediction"})), "1", profile)
    x, y = friedman.friedman_rows(synth.Friedman(seed=8), 1000)
    predicted = model[0].predict(x)
    assert feed(monitor, x[:500], predicted[:500], y[:500]) == []
    evaluation = monitor.latest
    assert evaluation is not None
    tests = {f.feature: f.test for f in evaluation.features}
    assert tests["_prediction"] == "ks" and len(tests) == 11
    found = feed(monitor, x[500:], predicted[500:] + 3.0, y[500:], start=500)
    assert len(found) == 1
    decision = found[0][1]
    assert {f.feature for f in decision.features if f.drifted} == {"_prediction"}
    assert decision.reasons[0].startswith("predictions drifted: KS D ")
    # a classifier whose classes are numbers: its prediction stays out of the KS tests
    classifier = build_profile(
        "c", "1", pd.DataFrame({"x": np.arange(100.0)}), pd.Series(np.arange(100) % 2)
    )
    assert classifier.prediction is not None and classifier.prediction.kind == "numeric"
    window = pd.DataFrame({"x": np.arange(100.0), "_prediction": np.ones(100)})
    assert [f.feature for f in PreparedReference(classifier).evaluate(window, 1e-4).features] == [
        "x"
    ]


def test_target_drift_is_a_ks_test_of_the_labels_with_persistence(
    model: tuple[Any, RegressionReference],
) -> None:
    monitor = ModelMonitor(
        "r", DriftPolicy(triggers=frozenset({"label_prior"})), "1", profile_of(model)
    )
    x, y = friedman.friedman_rows(synth.Friedman(seed=9), 3000)
    predicted = model[0].predict(x)
    assert feed(monitor, x[:1000], predicted[:1000], y[:1000]) == []
    prior = monitor.performance.label_prior(1e-4)
    assert prior is not None and prior.test == "label_ks" and not prior.drifted
    # labels and predictions move together: errors unchanged, the target's distribution not
    found = feed(monitor, x[1000:], predicted[1000:] + 4.0, y[1000:] + 4.0, start=1000)
    assert len(found) == 1
    decision = found[0][1]
    drifted = {f.feature: f.test for f in decision.features if f.drifted}
    # the predictions moved too (reported, not a trigger here); the errors did not
    assert drifted == {"_label": "label_ks", "_prediction": "ks"}
    assert decision.reasons[-1].startswith("target (label) distribution changed: KS D ")
    # a retrain's rows start near where the labels moved (label_change.numeric_change_rows),
    # not at the alarm: labels of a batch are joined at its last row's time
    since_row = decision.window_end / 0.01
    assert 1000 <= since_row <= found[0][0] - 250


def test_report_shows_mae_over_time_the_target_and_the_html_plots_it(
    model: tuple[Any, RegressionReference],
) -> None:
    estimator, reference = model
    monitor = ModelMonitor("r", DriftPolicy(), "1", profile_of(model))
    stream = synth.FriedmanDrift(drift_type="gra", position=(1500, 10**9), seed=10)
    x, y = friedman.friedman_rows(stream, 2000)
    feed(monitor, x, estimator.predict(x), y)
    report = monitor.report(now=2000.0)
    p = report.performance
    assert p.task == "regression" and p.labelled_rows == 2000 and p.window_rows == 500
    assert p.reference_mae == pytest.approx(reference.mae) and p.reference_source == "profile"
    assert p.live_mae is not None and p.live_mae > 2 * reference.mae
    assert p.live_accuracy is None and p.reference_accuracy is None
    points = p.error_over_time
    assert [e.rows for e in points] == list(range(100, 2001, 100))
    assert points[0].at == pytest.approx(0.99) and points[-1].at == pytest.approx(19.99)
    assert max(e.mae for e in points[:15]) < 1.5 * reference.mae < points[-1].mae
    columns = {d.column: d for d in report.distributions}
    assert columns["_label"].kind == "numeric" and columns["_label"].live_count == 500
    assert columns["_prediction"].kind == "numeric"
    message = drift_report_pb(report)
    assert message.performance.task == "regression" and message.performance.has_reference
    assert len(message.performance.error_over_time) == 20
    assert message.performance.error_over_time[-1].at.seconds == 19
    page = render_html(message, [])
    assert "Live vs reference error (MAE) over time" in page and "<polyline" in page
    assert page.count("<circle") == 20 and "stroke-dasharray" in page
    console = Console(record=True, width=200)
    render(console, message, [])
    text = console.export_text()
    assert "live MAE / RMSE" in text and "absolute-error CUSUM" in text
    assert "live accuracy" not in text


def test_classifier_reports_keep_their_accuracy_rows_and_no_error_plot() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 500)})
    profile = build_profile("m", "1", frame, pd.Series(np.where(frame["x"] > 0, "1", "0")))
    monitor = ModelMonitor("m", DriftPolicy(), "1", profile)
    message = drift_report_pb(monitor.report(now=1.0))
    assert message.performance.task == "classification"
    assert "MAE" not in render_html(message, [])


# -- shadow evidence of a regressor --


def _log(version: str, ids: list[str], preds: np.ndarray, shadow: bool = False) -> Any:
    frame = pd.DataFrame({"_request_id": ids, "_prediction": preds.astype(float), "_ts": 1.0})
    for f in FEATURES:
        frame[f] = 0.5
    payload = events_pb2.PredictionLog(
        model="r",
        version=version,
        arrow_ipc=table_to_ipc(pa.Table.from_pandas(frame)),
        row_count=len(ids),
        shadow=shadow,
    )
    return envelope.new_event("serving", payload)


def _labels(ids: list[str], values: list[str]) -> Any:
    return envelope.new_event(
        "labels", events_pb2.LabelBatch(model="r", request_ids=ids, labels=values)
    )


class _NoPublisher:
    def event(self, payload: Any, **kw: Any) -> Any:
        raise AssertionError("no drift expected")


async def test_shadow_regressor_reports_errors_and_paired_closer_counts(
    tmp_path: Path, model: tuple[Any, RegressionReference]
) -> None:
    fake = FakeRegistry()
    fake.put_version(ModelVersion("r", "1", profile_uri="profiles/r/1.json"), alias="production")
    fake.put_version(ModelVersion("r", "2"), alias="shadow")
    fake.state.verdicts.append(
        ShadowVerdict("waiting", "need more", 50, ModelVersion("r", "2", status="shadow"))
    )
    store = LocalObjectStore(tmp_path / "store")
    store.put("profiles/r/1.json", profile_of(model).to_json())
    monitors = ModelMonitors(DriftPolicy())
    shadow = ShadowMonitor(ShadowComparisons(report_every=50), RegistryEvidence(fake))  # type: ignore[arg-type]
    handler = MonitoringHandler(
        monitors,
        _NoPublisher(),
        RegistryProfiles(fake, store),
        shadow=shadow,  # type: ignore[arg-type]
    )
    await handler.reconcile()
    rng = np.random.default_rng(13)
    truth = rng.normal(10, 3, 60)
    ids = [f"q{i}" for i in range(60)]
    champion = truth + rng.normal(0, 2.0, 60)
    challenger = truth + rng.normal(0, 0.5, 60)
    await handler.handle(_log("2", ids, challenger, shadow=True))
    await handler.handle(_log("1", ids, champion))
    texts = [str(v) for v in truth]
    texts[0] = "n/a"  # not a number: no pair, for the shadow as for the monitor
    before = REGISTRY.get_sample_value("driftloop_monitoring_labels_invalid_total", {"model": "r"})
    await handler.handle(_labels(ids[:51], texts[:51]))
    after = REGISTRY.get_sample_value("driftloop_monitoring_labels_invalid_total", {"model": "r"})
    assert (after or 0.0) - (before or 0.0) == 1.0
    [evidence] = fake.state.evidence
    assert evidence.labelled == 50
    rows = slice(1, 51)
    shadow_mae = float(np.mean(np.abs(truth[rows] - challenger[rows])))
    champion_mae = float(np.mean(np.abs(truth[rows] - champion[rows])))
    assert evidence.shadow_metrics["mae"] == pytest.approx(shadow_mae)
    assert evidence.champion_metrics["mae"] == pytest.approx(champion_mae)
    assert {"mae", "rmse", "r2"} <= set(evidence.shadow_metrics)
    closer = np.abs(truth[rows] - challenger[rows]) < np.abs(truth[rows] - champion[rows])
    assert (evidence.shadow_only_right, evidence.champion_only_right) == (
        int(closer.sum()),
        int((~closer).sum()),
    )
    assert monitors.get("r").labels_invalid == 1
    assert json.loads(json.dumps(evidence.shadow_metrics))["mae"] > 0


def test_bank_standardises_by_the_reference_and_caps_outliers() -> None:
    bank = AbsErrorCusumBank(mae=10.0, sd=5.0, margin=0.5, shift=0.4, arl0=1e8)
    assert bank.center == 10.5 and bank.scale == 5.0
    assert bank.standardise(np.array([10.5, 15.5])).tolist() == [0.0, 1.0]
    # absurd errors now and then (label typos) are not a drift
    errors = np.full(2000, 8.0)
    errors[::200] = 1e12
    assert bank.update(errors) is None
    # a sustained rise of the MAE by 40% is
    assert bank.update(np.abs(np.random.default_rng(2).normal(0, 1.4 * 12.5, 2000))) is not None


def test_a_perfect_holdout_is_a_usable_reference_and_any_error_then_alarms() -> None:
    """MAE = RMSE = 0 on the holdout (or in the burn-in) must neither crash the bank nor make
    it blind: a model that was exact and now errs has drifted."""
    tracker = RegressionTracker(
        RegressionReference(0.0, 0.0, 1000, "profile"),
        burn_in_rows=10,
        window_rows=50,
        mae_shift=0.2,
        error_arl0=1e7,
    )
    assert tracker.observe(["1.0"] * 500, ["1.0"] * 500) is None
    assert tracker.observe(["1.0"] * 500, ["1.5"] * 500) is not None
    assert tracker.fired in ("_abs_error", "_abs_error_shift", "_abs_error_adwin")
