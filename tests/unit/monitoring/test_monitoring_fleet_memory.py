"""Monitors in bounded memory (a fleet runs thousands): the live window merges small logs and
idle windows, the reference samples live once as arrays, the labelled-row buffers and the GLR
are compact, and one monitor after some traffic stays within a measured budget
(core/fleet_memory.py prints the figures)."""

from __future__ import annotations

import collections

import numpy as np
import pandas as pd
import pytest

from driftloop.services.monitoring.core import fleet_memory
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.fleet_dispatch import FleetDispatch
from driftloop.services.monitoring.core.fleet_episodes import FleetEpisodeRules
from driftloop.services.monitoring.core.fleet_thresholds import FleetSizes
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.services.monitoring.core.recent import RecentValues
from driftloop.services.monitoring.core.report import distributions
from driftloop.services.monitoring.core.sequential import ErrorRateGlr
from driftloop.services.monitoring.core.window import MAX_CHUNKS, LiveWindow
from driftloop.shared.profile import ReferenceProfile, build_profile

pytestmark = pytest.mark.unit


def one_row_logs(rng: np.random.Generator, n: int) -> list[pd.DataFrame]:
    frame = pd.DataFrame(
        {"x": rng.normal(size=n), "colour": rng.choice(["a", "b"], n), "_ts": np.arange(n)}
    )
    frame["_prediction"] = "1"
    frame["_request_id"] = [f"r{i}" for i in range(n)]
    return [frame.iloc[i : i + 1] for i in range(n)]


def test_the_window_merges_small_logs_and_tests_exactly_the_latest_rows() -> None:
    window = LiveWindow(300, None, ["x", "colour", "_prediction", "_ts"])
    logs = one_row_logs(np.random.default_rng(1), 1000)
    for log in logs:
        window.append(log)
        assert len(window._chunks) <= MAX_CHUNKS + 1  # noqa: SLF001
    assert 300 <= len(window) <= 300 + MAX_CHUNKS
    expected = pd.concat(logs[-300:], ignore_index=True)[["x", "colour", "_prediction", "_ts"]]
    tested = window.frame().reset_index(drop=True)
    pd.testing.assert_frame_equal(tested, expected, check_dtype=False)
    window.compact()
    assert len(window._chunks) == 1 and len(window) == 300  # noqa: SLF001
    pd.testing.assert_frame_equal(window.frame().reset_index(drop=True), tested)
    assert "_request_id" not in window.frame().columns


def test_a_time_bounded_window_still_cuts_by_time() -> None:
    window = LiveWindow(300, 50.0, ["x", "_ts"])
    for log in one_row_logs(np.random.default_rng(2), 400):
        window.append(log)
    assert window.frame()["_ts"].tolist() == list(range(349, 400))


def test_idle_monitors_are_compacted_by_the_timer() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(size=500), "colour": rng.choice(["a", "b"], 500)})
    profile = build_profile("m", "1", reference, pd.Series(["1"] * 500))
    sizes = FleetSizes()
    monitors = ModelMonitors(DriftPolicy(), scale=sizes.scale)
    fleets = FleetDispatch(monitors, sizes, FleetEpisodeRules(), idle_after_s=60.0)
    model = "arrivals/route_id=1"
    monitors.switch(model, "1", profile)
    for log in one_row_logs(rng, 10):
        monitors.observe(model, "1", log, 0.0)
    fleets.saw(model, 0.0)
    window = monitors.get(model).window
    assert len(window._chunks) == 10  # noqa: SLF001
    fleets.tick(59.0)
    assert len(window._chunks) == 10  # noqa: SLF001
    fleets.tick(60.0)
    assert len(window._chunks) == 1 and len(window) == 10  # noqa: SLF001


def test_the_monitor_keeps_reference_samples_once_and_reports_them() -> None:
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"x": rng.normal(size=3000), "colour": rng.choice(["a", "b"], 3000)})
    predicted = pd.Series(rng.normal(size=3000))
    profile = build_profile("m", "1", reference, predicted, target=predicted + 1, task="regression")
    full = ReferenceProfile.from_json(profile.to_json())
    monitors = ModelMonitors(DriftPolicy())
    monitors.switch("m", "1", profile)
    monitor = monitors.get("m")
    kept = [*monitor.profile.features, monitor.profile.prediction, monitor.profile.target]
    assert all(c.sample == [] for c in kept if c is not None and c.kind == "numeric")
    assert profile.features[0].sample, "the caller's profile is left as it was"
    live = pd.DataFrame({"x": rng.normal(size=300), "colour": ["a"] * 300})
    live["_prediction"] = rng.normal(size=300)
    monitors.observe("m", "1", live, 0.0)
    shown = {d.column: d for d in monitors.report("m").distributions}
    expected = {d.column: d for d in distributions(full.features, live)}
    assert shown["x"].reference_shares == pytest.approx(expected["x"].reference_shares)
    assert shown["x"].live_shares == pytest.approx(expected["x"].live_shares)


def test_recent_values_behave_as_a_bounded_deque() -> None:
    recent, reference = RecentValues(5), collections.deque(maxlen=5)
    for batch in ([1.0, 2.0], [], [3.0, 4.0, 5.0, 6.0], np.arange(7.0, 15.0), [15.0]):
        recent.extend(batch)
        reference.extend(list(batch))
        assert list(recent) == list(reference) and len(recent) == len(reference)
    assert recent[0] == 11.0 and recent[-1] == 15.0 and bool(recent)
    assert not RecentValues(3) and RecentValues(3).values().nbytes == 0


def test_the_glr_keeps_two_bytes_a_row_and_the_same_statistics() -> None:
    rng = np.random.default_rng(5)
    errors = rng.random(70_000) < 0.2
    whole, chunked = ErrorRateGlr(1e7), ErrorRateGlr(1e7)
    path = whole.path(errors)
    parts = np.concatenate([chunked.path(errors[i : i + 999]) for i in range(0, 70_000, 999)])
    np.testing.assert_array_equal(path, parts)
    assert whole._cum.dtype == np.uint16  # noqa: SLF001
    assert whole._cum.nbytes <= 2 * (50_001 + ErrorRateGlr.CHUNK)  # noqa: SLF001
    # the statistic only depends on counts: rebasing the cumulative errors changes nothing
    fresh = ErrorRateGlr(1e7, threshold=np.inf)
    assert np.array_equal(fresh.path(errors[-5000:]), ErrorRateGlr(1e7).path(errors[-5000:]))


def test_one_monitor_after_traffic_stays_within_its_measured_budget() -> None:
    """Before this work one such monitor held about 2 MB (1,000 rows in two-row logs); the
    reference samples alone are 144 kB (nine columns x 2,000 values)."""
    found = fleet_memory.measure(1, 600, 2, traced=True)
    assert found.reference_kb_each == pytest.approx(144.0)
    assert found.idle_kb_each < 800, found
