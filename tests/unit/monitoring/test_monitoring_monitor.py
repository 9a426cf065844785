"""Unit tests of ModelMonitor: no false alarms, detection delay, debouncing, cool-down."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.monitor import DriftDecision, ModelMonitor, ModelMonitors
from driftloop.services.monitoring.settings import MonitoringSettings
from driftloop.shared.errors import NotFound
from driftloop.shared.profile import build_profile

pytestmark = pytest.mark.unit

POLICY = DriftPolicy()
CHUNK = 25  # rows per observe() call, like small prediction-log batches
COLOURS = ["red", "green", "blue"]


def rows(
    rng: np.random.Generator,
    n: int,
    *,
    shift: float = 0.0,
    colours: tuple[float, float, float] = (0.5, 0.3, 0.2),
) -> pd.DataFrame:
    """5 numeric features (x2 shifted by `shift` of its std), a categorical and a prediction."""
    frame = pd.DataFrame({f"x{i}": rng.normal(i, 1.0 + i, n) for i in range(5)})
    frame["x2"] += shift * 3.0
    frame["colour"] = rng.choice(COLOURS, n, p=list(colours))
    frame["_prediction"] = np.where(frame["x0"] > 0, "yes", "no")
    return frame


def profile_of(frame: pd.DataFrame, version: str = "1"):  # type: ignore[no-untyped-def]
    return build_profile("m", version, frame.drop(columns="_prediction"), frame["_prediction"])


def stream(
    monitor: ModelMonitor, frame: pd.DataFrame, start_row: int, version: str = "1"
) -> list[tuple[int, DriftDecision]]:
    """Feed `frame` in CHUNK-row batches; rows are 10 ms apart. Returns (row index, decision)."""
    decisions = []
    for offset in range(0, len(frame), CHUNK):
        chunk = frame.iloc[offset : offset + CHUNK].copy()
        first = start_row + offset
        chunk["_ts"] = 1_000.0 + (first + np.arange(len(chunk))) * 0.01
        decision = monitor.observe(version, chunk, now=1_000.0 + (first + len(chunk)) * 0.01)
        if decision is not None:
            decisions.append((first + len(chunk), decision))
    return decisions


@pytest.fixture
def monitor() -> ModelMonitor:
    rng = np.random.default_rng(7)
    return ModelMonitor("m", POLICY, "1", profile_of(rows(rng, 5000)))


def test_stationary_stream_never_alarms(monitor: ModelMonitor) -> None:
    decisions = stream(monitor, rows(np.random.default_rng(8), 20_000), 0)
    assert decisions == []
    report = monitor.report()
    assert report.rows_seen == 20_000 and report.window_rows == POLICY.window_rows
    assert len(report.features) == 7 and not report.drifted  # 5 ks + colour + prediction


def test_numeric_shift_is_detected_fast_and_debounced(monitor: ModelMonitor) -> None:
    rng = np.random.default_rng(9)
    assert stream(monitor, rows(rng, 1000), 0) == []
    decisions = stream(monitor, rows(rng, 5400, shift=1.5), 1000)
    assert len(decisions) == 1, "one episode, however long the drift lasts"
    at, decision = decisions[0]
    assert at - 1000 <= POLICY.window_rows + POLICY.eval_every * POLICY.persistence
    drifted = {f.feature for f in decision.features if f.drifted}
    assert "x2" in drifted and drifted <= {"x2", "_prediction"}
    assert decision.live_rows == POLICY.window_rows and decision.reference_rows == 5000
    assert decision.window_end - decision.window_start == pytest.approx(2.99)
    assert monitor.report().open_episode_id == decision.episode_id
    assert monitor.decisions == [decision]


def test_categorical_frequency_change_is_detected(monitor: ModelMonitor) -> None:
    rng = np.random.default_rng(10)
    stream(monitor, rows(rng, 1000), 0)
    decisions = stream(monitor, rows(rng, 1000, colours=(0.2, 0.3, 0.5)), 1000)
    assert len(decisions) == 1
    drifted = {f.feature for f in decisions[0][1].features if f.drifted}
    assert drifted == {"colour"}
    colour = next(f for f in decisions[0][1].features if f.feature == "colour")
    assert colour.test == "chi2"


def test_switch_closes_the_episode_and_cools_down(monitor: ModelMonitor) -> None:
    rng = np.random.default_rng(11)
    stream(monitor, rows(rng, 500), 0)
    assert len(stream(monitor, rows(rng, 1000, shift=1.5), 500)) == 1
    monitor.switch("2", profile_of(rows(rng, 5000, shift=1.5), "2"))
    report = monitor.report()
    assert (report.version, report.open_episode_id, report.rows_seen) == ("2", "", 0)
    assert report.features == () and report.evaluated_at is None
    assert stream(monitor, rows(rng, 1000, shift=1.5), 1500) == [], "old version ignored"
    assert monitor.rows_ignored == 1000
    assert stream(monitor, rows(rng, 5000, shift=1.5), 2500, version="2") == []
    assert monitor.report().rows_seen == 5000 and len(monitor.decisions) == 1


def test_no_evaluation_before_min_rows(monitor: ModelMonitor) -> None:
    stream(monitor, rows(np.random.default_rng(12), POLICY.min_rows - 1, shift=3.0), 0)
    assert monitor.report().evaluated_at is None
    stream(monitor, rows(np.random.default_rng(13), 1, shift=3.0), POLICY.min_rows - 1)
    assert monitor.report().evaluated_at is not None


def test_open_episode_fires_again_after_its_timeout() -> None:
    rng = np.random.default_rng(14)
    policy = DriftPolicy(episode_timeout_s=5.0)
    monitor = ModelMonitor("m", policy, "1", profile_of(rows(rng, 5000)))
    decisions = stream(monitor, rows(rng, 2000, shift=1.5), 0)  # 20 s of drifted rows
    assert len(decisions) >= 2
    assert decisions[1][1].decided_at - decisions[0][1].decided_at >= 5.0
    assert decisions[0][1].episode_id != decisions[1][1].episode_id


def test_decisions_do_not_depend_on_batching() -> None:
    rng = np.random.default_rng(15)
    profile = profile_of(rows(rng, 5000))
    live = pd.concat([rows(rng, 600), rows(rng, 600, shift=1.0)], ignore_index=True)
    live["_ts"] = np.arange(len(live), dtype=float)
    small, big = ModelMonitor("m", POLICY, "1", profile), ModelMonitor("m", POLICY, "1", profile)
    for start in range(0, len(live), 7):
        small.observe("1", live.iloc[start : start + 7], now=1.0)
    big.observe("1", live, now=1.0)
    assert small.report().features == big.report().features
    assert [d.window_end for d in small.decisions] == [d.window_end for d in big.decisions]


def test_monitors_raise_not_found_for_unknown_models() -> None:
    monitors = ModelMonitors(POLICY)
    with pytest.raises(NotFound, match="'ghost' is not monitored"):
        monitors.report("ghost")
    monitors.switch("m", "1", profile_of(rows(np.random.default_rng(16), 100)))
    assert monitors.version("m") == "1" and monitors.decisions() == []


def test_settings_map_to_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_MONITORING_WINDOW_ROWS", "500")
    monkeypatch.setenv("DRIFTLOOP_MONITORING_ALPHA", "0.01")
    policy = MonitoringSettings().policy()
    assert policy == DriftPolicy(window_rows=500, alpha=0.01)


FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.tuples(FLOATS, FLOATS, FLOATS, st.sampled_from(["red", "new", ""])),
        min_size=0,
        max_size=40,
    ),
    drop_column=st.booleans(),
)
def test_observe_never_raises_on_odd_values(data: list[tuple], drop_column: bool) -> None:
    rng = np.random.default_rng(17)
    policy = DriftPolicy(window_rows=20, min_rows=5, eval_every=5)
    monitor = ModelMonitor("m", policy, "1", profile_of(rows(rng, 200)))
    frame = pd.DataFrame(data, columns=["x0", "x1", "_ts", "colour"])
    if drop_column:
        frame = frame.drop(columns="colour")
    for half in (frame.iloc[: len(frame) // 2], frame.iloc[len(frame) // 2 :]):
        monitor.observe("1", half, now=0.0)
    report = monitor.report()
    assert report.rows_seen == len(frame)
    for f in report.features:
        assert 0.0 <= f.p_value <= 1.0 and np.isfinite(f.statistic)
