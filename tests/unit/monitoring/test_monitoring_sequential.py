"""Unit tests of the live-stream error-rate GLR and of the bench's training-like profile."""

from __future__ import annotations

import numpy as np
import pytest

from driftloop.services.monitoring.core import calibration, sequential
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.monitor import ModelMonitor
from driftloop.services.monitoring.core.sequential import ErrorRateGlr
from driftloop.shared.cli.bench import drift as bench_drift
from driftloop.shared.cli.bench import drift_streams as bench_drift_streams
from driftloop.shared.cli.bench import replay

pytestmark = pytest.mark.unit


def test_threshold_is_the_calibrated_one_and_grows_with_the_log_of_the_run_length() -> None:
    assert sequential.glr_threshold(sequential.CALIBRATED_ARL) == sequential.CALIBRATED_THRESHOLD
    ten_times = sequential.glr_threshold(10 * sequential.CALIBRATED_ARL)
    expected = np.log(10) / sequential.ARL_SLOPE
    assert ten_times - sequential.CALIBRATED_THRESHOLD == pytest.approx(expected)
    assert ErrorRateGlr(1e7).threshold == sequential.glr_threshold(1e7)


def test_alarm_row_does_not_depend_on_batching_and_is_the_first_crossing() -> None:
    rng = np.random.default_rng(7)
    errors = rng.random(6000) < np.r_[np.full(4000, 0.1), np.full(2000, 0.25)]
    path = ErrorRateGlr(1e7, prior_rows=1000, prior_errors=100).path(errors)
    threshold = sequential.glr_threshold(1e7)
    expected = int(np.flatnonzero(path >= threshold)[0])
    assert expected >= 4000
    for size in (1, 37, 250, 6000):
        glr = ErrorRateGlr(1e7, prior_rows=1000, prior_errors=100)
        found = None
        for b in range(0, 6000, size):
            hit = glr.update(errors[b : b + size])
            if hit is not None:
                found = b + hit
                break
        assert found == expected
        assert glr.alarm_statistic >= threshold and glr.statistic == 0.0  # restarted


def test_short_windows_need_more_evidence_than_long_ones() -> None:
    glr = ErrorRateGlr(1e7, prior_rows=1000, prior_errors=100)
    assert glr._bonus[0] == 0.0 and np.all(np.diff(glr._bonus) > 0)
    expected = sequential.SCALE_BONUS * np.log(glr._post[-1] / glr._post[0])
    assert glr._bonus[-1] == pytest.approx(expected)


def test_calibration_counts_fewer_alarms_at_higher_thresholds() -> None:
    run = calibration.null_run(0.2, deployments=1, deployment_rows=20_000, thresholds=(6.0, 9.0))
    assert run.rows == 20_000 and run.alarms[6.0] >= run.alarms[9.0]
    assert run.arl(9.0) >= run.arl(6.0)
    above = np.zeros(1000, dtype=bool)
    above[[10, 11, 12, 100, 400]] = True
    assert calibration._alarms(above, 200) == 2  # 10-12 and 100 are one excursion


def test_silent_on_a_stationary_stream_and_quick_on_a_doubled_error_rate() -> None:
    rng = np.random.default_rng(0)
    glr = ErrorRateGlr(1e7, prior_rows=1000, prior_errors=100)
    for _ in range(40):  # 200,000 rows at the reference's error rate, in label batches
        assert glr.update(rng.random(5000) < 0.1) is None
    assert 0 < glr.statistic < glr.threshold
    shifted = rng.random(4000) < 0.2
    crossed = glr.update(shifted)
    assert crossed is not None and crossed < 1500
    assert glr.alarm_statistic >= glr.threshold and glr.statistic == 0.0


def test_a_decrease_of_the_error_rate_is_not_an_alarm() -> None:
    rng = np.random.default_rng(1)
    glr = ErrorRateGlr(1e7)
    assert glr.update(rng.random(3000) < 0.3) is None
    assert glr.update(rng.random(20000) < 0.05) is None


def test_bench_reference_profile_is_built_like_training_and_used_as_such() -> None:
    plan = bench_drift.Plan({"concept": 1}, 1000, 1000, 0, 0, 0, 0)
    stream = next(bench_drift_streams.streams(plan, 0))
    profile = replay.reference_profile(stream)
    assert profile.rows == 4000 and profile.target is not None and profile.target.count == 4000
    assert set(profile.metrics) == {"accuracy", "f1_macro"}
    assert 0.85 < profile.metrics["accuracy"] < 0.95
    tracker = ModelMonitor("m", DriftPolicy(), "1", profile).performance
    assert tracker.reference is not None and tracker.reference.source == "profile"
    assert tracker.reference.holdout_rows == 1000  # a quarter of the training rows


def test_an_alarm_estimates_how_long_ago_the_error_rate_changed() -> None:
    """The split with the largest statistic at the alarm: the rows a retrain may learn from."""
    rng = np.random.default_rng(21)
    glr = ErrorRateGlr(1e7, prior_rows=2000, prior_errors=220)
    before = rng.random(3000) < 0.11
    after = rng.random(5000) < 0.17
    alarm = glr.update(np.concatenate([before, after]))
    assert alarm is not None and alarm > 3000
    since_change = alarm - 3000 + 1
    # the grid steps by 1.2: the estimate lies within about that factor of the truth
    assert since_change / 1.6 <= glr.alarm_post <= since_change * 1.6
