"""Unit tests of the drift report's extras (distributions, performance, episode state), of the
persisted drift history, and of the `driftloop drift` table, JSON and HTML renderings."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from driftloop.services.monitoring.adapters.pb import drift_report_pb, history_entry_pb
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.history import DriftHistory, entry_from_json, entry_to_json
from driftloop.services.monitoring.core.monitor import ModelMonitor
from driftloop.services.monitoring.core.report import f1_macro
from driftloop.shared.cli.commands.drift import as_dict, render
from driftloop.shared.cli.commands.drift_html import render_html
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.profile import TARGET, build_profile

pytestmark = pytest.mark.unit


def rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    frame = pd.DataFrame({"x0": rng.normal(0, 1, n), "x1": rng.normal(5, 2, n) + shift})
    frame["plan"] = rng.choice(["basic", "pro", "team"], n, p=[0.5, 0.3, 0.2])
    frame["_prediction"] = np.where(frame["x0"] > 0, "yes", "no")
    return frame


def monitor_with_drift() -> ModelMonitor:
    rng = np.random.default_rng(3)
    ref = rows(rng, 3000)
    labels = pd.Series(np.where(rng.random(3000) < 0.9, ref["_prediction"], "other"))
    profile = build_profile(
        "m",
        "1",
        ref.drop(columns="_prediction"),
        ref["_prediction"],
        target=labels,
        metrics={"accuracy": 0.9, "f1_macro": 0.6},
    )
    monitor = ModelMonitor("m", DriftPolicy(), "1", profile)
    live = rows(rng, 600, shift=6.0)
    live["_ts"] = 1_000.0 + np.arange(600) * 0.01
    live["_request_id"] = [f"r{i}" for i in range(600)]
    for start in range(0, 600, 50):
        monitor.observe("1", live.iloc[start : start + 50], now=1_000.0 + start * 0.01)
    monitor.observe_labels(["r1", "r2", "nope"], ["yes", "no", "yes"], now=1_010.0)
    return monitor


def test_report_carries_distributions_performance_and_episode() -> None:
    monitor = monitor_with_drift()
    report = monitor.report(now=1_011.0)
    by_column = {d.column: d for d in report.distributions}
    assert set(by_column) == {"x0", "x1", "plan", "_prediction", TARGET}
    x1 = by_column["x1"]
    assert len(x1.bin_edges) == len(x1.live_shares) + 1 == len(x1.reference_shares) + 1
    assert sum(x1.live_shares) == pytest.approx(1.0)
    # the live x1 sits 6 above the reference: its mass is in the upper bins, the reference's not
    half = len(x1.live_shares) // 2
    assert sum(x1.live_shares[half:]) > 0.9 > sum(x1.reference_shares[half:])
    assert by_column["plan"].categories[:3] == ("basic", "pro", "team")
    assert (x1.reference_count, x1.live_count) == (2000, 300)
    perf = report.performance
    assert (perf.labelled_rows, perf.unmatched_labels, perf.window_rows) == (2, 1, 2)
    assert perf.reference_accuracy == pytest.approx(0.9) and perf.reference_source == "profile"
    assert perf.reference_f1_macro == pytest.approx(0.6)
    assert perf.pending_predictions == 598
    assert report.episode.open and report.episode.episode_id == report.open_episode_id
    assert report.episode.cooldown_rows_left == 0
    assert report.window_start == pytest.approx(1_003.0) and report.window_end == 1_005.99
    assert report.rows_ignored == 0


def test_episode_state_after_a_deployment_and_cool_down() -> None:
    monitor = monitor_with_drift()
    episode = monitor.report(now=1_011.0).episode.episode_id
    monitor.switch("2", monitor.profile)
    state = monitor.report(now=1_012.0).episode
    assert (state.episode_id, state.open) == (episode, False)
    assert state.cooldown_rows_left == DriftPolicy().min_rows


def test_resume_restores_an_open_episode_of_the_same_version_only() -> None:
    monitor = monitor_with_drift()
    monitor.switch("1", monitor.profile)  # a restarted process: same version, nothing open
    monitor.resume("abc", "1", opened_at=1_000.0)
    assert monitor.report(now=1_001.0).episode.open
    other = monitor_with_drift()
    other.switch("2", other.profile)
    other.resume("abc", "1", opened_at=2_000.0)
    state = other.report(now=2_001.0).episode
    assert state.episode_id == "abc" and not state.open


def test_f1_macro_matches_the_definition() -> None:
    assert f1_macro(["a", "a", "b", "b"], ["a", "b", "b", "b"]) == pytest.approx((2 / 3 + 0.8) / 2)
    assert f1_macro([], []) is None


def test_history_round_trips_and_survives_a_new_instance(tmp_path) -> None:  # type: ignore[no-untyped-def]
    monitor = monitor_with_drift()
    decision = monitor.decisions[0]
    store = LocalObjectStore(tmp_path)
    DriftHistory(store).record(decision, "ev1", "corr1")
    again = DriftHistory(store)
    assert again.entries() == []  # nothing until loaded
    assert again.load() == 1
    (entry,) = again.entries("m")
    assert entry.decision == decision and (entry.event_id, entry.correlation_id) == (
        "ev1",
        "corr1",
    )
    assert entry_from_json(entry_to_json(entry)) == entry
    assert again.entries("other") == [] and again.latest("m") == entry


def test_cli_renderings_show_every_test_and_the_html_is_self_contained() -> None:
    monitor = monitor_with_drift()
    report = drift_report_pb(monitor.report(now=1_011.0))
    entries = [history_entry_pb(DriftHistory().record(monitor.decisions[0], "e", "c"))]
    console = Console(record=True, width=200)
    render(console, report, entries)
    text = console.export_text()
    assert "Kolmogorov-Smirnov" in text and "DRIFT" in text and "labelled rows" in text
    data = json.loads(json.dumps(as_dict(report, entries)))
    assert data["report"]["performance"]["unmatched_labels"] == 1  # int64 as a JSON number
    assert data["history"][0]["correlation_id"] == "c"
    page = render_html(report, entries)
    assert page.count("<svg") == len(report.distributions) == 5
    assert "<script" not in page and "<link" not in page
    assert re.findall(r"(?:src|href)=", page) == []  # nothing fetched from anywhere
    assert "x1" in page and "Drift history (1 episodes" in page
