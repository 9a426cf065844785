"""Unit tests of live performance: label join, error-rate CUSUM, label prior, per-model policy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.error_detectors import ErrorRateAdwin, ErrorRateCusum
from driftloop.services.monitoring.core.monitor import ModelMonitor, ModelMonitors
from driftloop.services.monitoring.core.performance import PerformanceTracker, PredictionJoin
from driftloop.services.monitoring.settings import MonitoringSettings
from driftloop.shared.profile import ReferenceProfile, build_profile

pytestmark = pytest.mark.unit


def test_cusum_matches_the_row_by_row_recursion_and_restarts_after_an_alarm() -> None:
    rng = np.random.default_rng(1)
    errors = rng.random(5000) < np.r_[np.full(3000, 0.1), np.full(2000, 0.3)]
    cusum = ErrorRateCusum(0.1, 0.1, 1e7)
    s, expected = 0.0, None
    w1, w0 = math.log(0.2 / 0.1), math.log(0.8 / 0.9)
    for i, e in enumerate(errors):
        s = max(0.0, s + (w1 if e else w0))
        if s >= cusum.threshold:
            expected = i
            break
    got = [cusum.update(chunk) for chunk in np.array_split(errors, 37)]
    offsets = np.cumsum([0] + [len(c) for c in np.array_split(errors, 37)])
    first = next(offsets[k] + g for k, g in enumerate(got) if g is not None)
    assert expected is not None and first == expected and expected >= 3000
    assert 12 < cusum.threshold < math.log(1e7) and cusum.alarm_statistic >= cusum.threshold


def test_cusum_stays_quiet_on_a_long_stationary_error_stream() -> None:
    # With an average run length of 1e9 rows, a false alarm in 1M rows has odds of ~1e-3.
    rng = np.random.default_rng(2)
    cusum = ErrorRateCusum(0.1, 0.1, 1e9)
    assert all(cusum.update(rng.random(100_000) < 0.1) is None for _ in range(10))


def river_adwin_first_drift(errors: np.ndarray, delta: float) -> int | None:
    from river import drift

    detector = drift.ADWIN(delta=delta)
    for i, error in enumerate(errors.tolist()):
        detector.update(float(error))
        if detector.drift_detected:
            return i
    return None


def test_adwin_member_cuts_where_river_does_whatever_the_batching_and_only_on_increases() -> None:
    rng = np.random.default_rng(5)
    errors = rng.random(6000) < np.r_[np.full(3000, 0.1), np.full(3000, 0.25)]
    expected = river_adwin_first_drift(errors, 0.002)
    adwin = ErrorRateAdwin(0.002)
    chunks = np.array_split(errors, 23)
    offsets = np.cumsum([0] + [len(c) for c in chunks])
    got = [adwin.update(chunk) for chunk in chunks]
    first = next(offsets[k] + g for k, g in enumerate(got) if g is not None)
    assert expected is not None and expected >= 3000 and first == expected
    assert adwin.alarm_recent is not None and adwin.alarm_older is not None
    assert adwin.alarm_recent > adwin.alarm_older
    # The same size of change downwards: river cuts, the member does not call it an alarm.
    falling = rng.random(6000) < np.r_[np.full(3000, 0.25), np.full(3000, 0.1)]
    assert river_adwin_first_drift(falling, 0.002) is not None
    assert ErrorRateAdwin(0.002).update(falling) is None


def test_adwin_member_is_in_the_bank_its_evidence_is_reported_and_a_policy_can_turn_it_off() -> (
    None
):
    rng = np.random.default_rng(6)
    errors = rng.random(8000) < np.r_[np.full(3000, 0.1), np.full(5000, 0.2)]
    labels = np.where(errors, "1", "0").tolist()
    predictions = ["0"] * len(labels)

    def tracker(delta: float) -> PerformanceTracker:
        return PerformanceTracker(
            None,
            burn_in_rows=1000,
            window_rows=500,
            error_shift=0.1,
            error_arl0=1e7,
            adwin_delta=delta,
        )

    with_adwin, without = tracker(0.002), tracker(0.0)
    alarms = [
        with_adwin.observe(predictions[b : b + 250], labels[b : b + 250])
        for b in range(0, 8000, 250)
    ]
    first = next(b * 250 + a for b, a in enumerate(alarms) if a is not None)
    # The bank alarms no later than ADWIN alone would (it is one of its members).
    river_first = river_adwin_first_drift(errors, 0.002)
    assert river_first is not None and 3000 <= first <= river_first
    names = {f.feature: f for f in with_adwin.evidence(0.0001)}
    assert names["_error_adwin"].test == "adwin" and names["_error_adwin"].p_value == 0.002
    assert with_adwin.fired in ("_error_rate", "_error_shift", "_error_adwin")
    without.observe(predictions, labels)
    assert without.adwin is None
    assert "_error_adwin" not in {f.feature for f in without.evidence(0.0001)}


def test_adwin_delta_is_a_per_model_policy_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_MONITORING_MODEL_POLICIES", '{"quiet": {"adwin_delta": 0}}')
    settings = MonitoringSettings()
    assert settings.policy().adwin_delta == 0.002
    assert settings.policies()["quiet"].adwin_delta == 0
    monitor = ModelMonitor(
        "quiet", settings.policies()["quiet"], "1", profile(np.random.default_rng(7))
    )
    assert monitor.performance.adwin is None
    with pytest.raises(ValueError, match="adwin_delta"):
        DriftPolicy(adwin_delta=1.5)


def test_prediction_join_is_bounded_and_forgets_the_oldest() -> None:
    join = PredictionJoin(capacity=3)
    join.add("1", ["a", "b"], ["x", "y"], [1.0, 2.0])
    join.add("1", ["c", "d"], ["z", "w"], [3.0, 4.0])
    assert len(join) == 3 and join.evicted == 1
    assert join.take(["a", "d", "zz"]) == [None, ("1", "w", 4.0), None]
    assert len(join) == 2
    assert join.duplicates == 0
    assert join.take(["d", "zz", "d"]) == [None, None, None]
    assert join.duplicates == 2, "d was joined before; zz never was"
    join.take(["b", "c"])
    join.add("1", ["e", "f"], ["v", "u"], [5.0, 6.0])
    join.take(["e", "f"])  # the joined ids are bounded too: d (the oldest) is forgotten
    assert join.take(["d", "f"]) == [None, None] and join.duplicates == 3


def profile(rng: np.random.Generator, **kwargs: object) -> ReferenceProfile:
    frame = pd.DataFrame({"x": rng.normal(0, 1, 3000)})
    predictions = pd.Series(np.where(frame["x"] > 0, "1", "0"))
    return build_profile("m", "1", frame, predictions, **kwargs)  # type: ignore[arg-type]


def labelled(
    monitor: ModelMonitor, rng: np.random.Generator, n: int, error: float, start: int, p1: float
) -> list[tuple[int, object]]:
    """Log n predictions (10 ms apart), then their labels in batches of 100."""
    x = rng.normal(0, 1, n)
    predictions = np.where(x > 0, "1", "0")
    wrong = rng.random(n) < error
    truth = np.where(wrong, np.where(predictions == "1", "0", "1"), predictions)
    flip = rng.random(n) < p1  # optionally skew the labels towards "1"
    truth = np.where(flip, "1", truth)
    ids = [str(start + i) for i in range(n)]
    frame = pd.DataFrame(
        {
            "x": x,
            "_prediction": predictions,
            "_request_id": ids,
            "_ts": (start + np.arange(n)) * 0.01,
        }
    )
    monitor.observe("1", frame, now=(start + n) * 0.01)
    found = []
    for b in range(0, n, 100):
        decision = monitor.observe_labels(ids[b : b + 100], truth[b : b + 100].tolist(), now=0.0)
        if decision is not None:
            found.append((start + b, decision))
    return found


def test_error_rate_rise_is_detected_from_labels_with_a_live_burn_in() -> None:
    rng = np.random.default_rng(3)
    monitor = ModelMonitor("m", DriftPolicy(), "1", profile(rng))
    assert labelled(monitor, rng, 5000, 0.1, 0, 0.0) == []
    assert monitor.performance.reference is not None
    assert monitor.performance.reference.source == "live"
    found = labelled(monitor, rng, 2000, 0.35, 5000, 0.0)
    assert len(found) == 1
    at, decision = found[0]
    assert at - 5000 < 400
    by_name = {f.feature: f for f in decision.features}
    # The live-stream GLR (no reference needed, every row) fires before the CUSUM bank here.
    assert by_name["_error_shift"].drifted and by_name["_error_shift"].test == "glr"
    assert by_name["_error_rate"].test == "cusum" and not by_name["_error_rate"].drifted
    assert by_name["_accuracy"].statistic < 0.9 and by_name["_accuracy"].threshold > 0.85
    assert monitor.labels_unmatched == 0


def test_reference_accuracy_from_the_profile_skips_the_burn_in_and_labels_join_by_id() -> None:
    rng = np.random.default_rng(4)
    target = pd.Series(rng.choice(["0", "1"], 3000))
    monitor = ModelMonitor(
        "m", DriftPolicy(), "1", profile(rng, target=target, metrics={"accuracy": 0.9})
    )
    assert monitor.performance.reference is not None
    assert monitor.performance.reference.source == "profile"
    assert monitor.observe_labels(["unknown"], ["1"], now=0.0) is None
    assert monitor.labels_unmatched == 1
    found = labelled(monitor, rng, 3000, 0.4, 0, 0.0)
    assert len(found) == 1 and found[0][0] < 500


def test_labels_sent_again_are_counted_as_duplicates_not_joined_twice() -> None:
    rng = np.random.default_rng(5)
    monitor = ModelMonitor("m", DriftPolicy(), "1", profile(rng))
    labelled(monitor, rng, 300, 0.1, 0, 0.0)
    assert monitor.performance.labelled_rows == 300
    assert monitor.observe_labels(["0", "1", "nope"], ["1", "1", "1"], now=0.0) is None
    assert monitor.performance.labelled_rows == 300, "a retried label is not counted twice"
    assert (monitor.labels_duplicate, monitor.labels_unmatched) == (2, 1)
    summary = monitor.report(now=0.0).performance
    assert (summary.duplicate_labels, summary.unmatched_labels) == (2, 1)


def test_label_prior_shift_is_detected_and_triggers_are_per_model() -> None:
    policies = {"quiet": DriftPolicy(triggers=frozenset({"features"}))}
    monitors = ModelMonitors(DriftPolicy(), policies)
    for name in ("m", "quiet"):
        monitors.switch(name, "1", profile(np.random.default_rng(6)))
    loud, quiet = monitors.get("m"), monitors.get("quiet")
    assert quiet.policy.triggers == {"features"} and loud.policy == DriftPolicy()
    for monitor in (loud, quiet):
        labelled(monitor, np.random.default_rng(7), 1000, 0.0, 0, 0.0)
    # Half of the labels turn "1" whatever the prediction: a prior (and accuracy) change.
    assert labelled(quiet, np.random.default_rng(8), 3000, 0.0, 1000, 0.5) == []
    found = labelled(loud, np.random.default_rng(8), 3000, 0.0, 1000, 0.5)
    assert len(found) == 1
    drifted = {f.feature for f in found[0][1].features if f.drifted}
    assert drifted & {"_error_rate", "_error_shift", "_label"}
    report = quiet.report()
    assert {"_accuracy", "_error_rate", "_label"} <= {f.feature for f in report.features}


def test_model_policies_override_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "DRIFTLOOP_MONITORING_MODEL_POLICIES",
        '{"churn": {"alpha": 0.0001, "triggers": ["accuracy"]}}',
    )
    settings = MonitoringSettings()
    assert settings.policy() == DriftPolicy()
    churn = settings.policies()["churn"]
    assert churn.alpha == 0.0001 and churn.triggers == {"accuracy"}
    assert churn.window_rows == DriftPolicy().window_rows
    monkeypatch.setenv("DRIFTLOOP_MONITORING_MODEL_POLICIES", '{"churn": {"alfa": 1}}')
    with pytest.raises(ValueError, match="alfa"):
        MonitoringSettings().policies()


def test_time_window_drops_old_rows() -> None:
    rng = np.random.default_rng(9)
    policy = DriftPolicy(window_seconds=1.0, min_rows=50, window_rows=300)
    monitor = ModelMonitor("m", policy, "1", profile(rng))
    frame = pd.DataFrame({"x": rng.normal(0, 1, 400), "_ts": np.arange(400) * 0.01})
    frame["_prediction"] = np.where(frame["x"] > 0, "1", "0")
    monitor.observe("1", frame, now=4.0)
    assert monitor.report().window_rows <= 101


def test_a_glr_alarm_dates_the_change_by_when_its_labels_arrived() -> None:
    """A retrain learns from rows labelled after the change began (the GLR's estimate, shrunk
    towards the alarm), not only from rows after the alarm."""
    rng = np.random.default_rng(3)
    monitor = ModelMonitor("m", DriftPolicy(), "1", profile(rng))
    for start, error, n in ((0, 0.1, 5000), (5000, 0.25, 3000)):
        x = rng.normal(0, 1, n)
        predictions = np.where(x > 0, "1", "0")
        truth = np.where(rng.random(n) < error, np.where(predictions == "1", "0", "1"), predictions)
        ids = [str(start + i) for i in range(n)]
        frame = pd.DataFrame(
            {"x": x, "_prediction": predictions, "_request_id": ids, "_ts": float(start)}
        )
        monitor.observe("1", frame, now=float(start))
        for b in range(0, n, 100):
            # labels of rows start+b.. arrive at time start+b (a label's arrival = its row)
            decision = monitor.observe_labels(
                ids[b : b + 100], truth[b : b + 100].tolist(), now=float(start + b)
            )
            if decision is not None:
                alarm_at = start + b
                break
        else:
            continue
        break
    assert decision is not None
    since = decision.window_end
    assert 5000 <= since <= alarm_at  # after the change, at or before the alarm
    assert since < alarm_at  # and reaching back: the rows since the change are usable


def test_labels_that_arrive_before_their_prediction_log_join_when_it_comes() -> None:
    """Under load the prediction log can lag the labels: such labels wait (bounded) instead of
    being lost, which slowed detection by whatever share of labels came early."""
    rng = np.random.default_rng(8)
    monitor = ModelMonitor("m", DriftPolicy(), "1", profile(rng))
    ids = [str(i) for i in range(200)]
    x = rng.normal(0, 1, 200)
    predictions = np.where(x > 0, "1", "0")
    assert monitor.observe_labels(ids[:150], predictions[:150].tolist(), now=1.0) is None
    assert monitor.labels_unmatched == 150  # waiting, not joined yet
    frame = pd.DataFrame(
        {"x": x, "_prediction": predictions, "_request_id": ids, "_ts": np.arange(200.0)}
    )
    monitor.observe("1", frame, now=2.0)
    assert monitor.labels_unmatched == 0
    assert monitor.performance.labelled_rows == 150
    monitor.observe_labels(ids[150:], predictions[150:].tolist(), now=3.0)
    assert monitor.performance.labelled_rows == 200
    # a label sent again after joining is a duplicate, not a label waiting for a prediction
    monitor.observe_labels(ids[:10], predictions[:10].tolist(), now=4.0)
    assert monitor.labels_duplicate == 10 and monitor.labels_unmatched == 0
