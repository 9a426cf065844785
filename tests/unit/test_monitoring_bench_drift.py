"""Unit tests of `driftloop bench drift`'s parts: scoring, stream generation, the Evidently
reproduction, and one small run of every detector (figures, not timings)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from driftloop.services.monitoring.drift import DriftPolicy
from driftloop.services.monitoring.replay import LabelledStream, StreamScore, score
from driftloop.shared.cli import bench_drift, bench_drift_streams

pytestmark = pytest.mark.unit

TINY = bench_drift.Plan({"abrupt": 1, "concept": 1}, 1500, 1500, 1, 3000, 500, 1000)


def stream_with_drift(start: int | None, at: int | None = None) -> LabelledStream:
    streams = bench_drift_streams.streams(TINY, 0)
    base = next(streams)
    return LabelledStream(
        "s", "abrupt", base.reference, base.reference_predictions, base.live, base.labels, start, at
    )


def test_score_counts_false_alarms_before_the_drift_and_the_first_hit_after() -> None:
    drifting = stream_with_drift(1500, 2000)
    assert score(drifting, [100, 900, 1499, 2100, 2200]) == StreamScore(1, 1, 101, 3, 1500)
    assert score(drifting, [1600]) == StreamScore(1, 1, 0, 0, 1500), "caught before the middle"
    assert score(drifting, []) == StreamScore(1, 0, None, 0, 1500)
    assert score(stream_with_drift(None), [5, 6]) == StreamScore(0, 0, None, 2, 3000)


def test_streams_are_deterministic_and_concept_drift_leaves_features_alone() -> None:
    first = list(bench_drift_streams.streams(TINY, 3))
    again = list(bench_drift_streams.streams(TINY, 3))
    assert [s.name for s in first] == ["abrupt-0", "concept-0", "stationary-0"]
    assert all((a.live.equals(b.live) for a, b in zip(first, again, strict=True)))
    concept = first[1]
    before, after = concept.live.iloc[:1500], concept.live.iloc[1500:]
    assert stats.ks_2samp(before["x00"], after["x00"]).pvalue > 1e-3
    assert concept.errors[1500:].mean() > concept.errors[:1500].mean() + 0.04


def test_wasserstein_reproduction_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    ref = np.sort(rng.normal(size=(2000, 3)), axis=0)
    live = np.sort(rng.normal(0.4, 2.0, size=(300, 3)), axis=0)
    ours = bench_drift_streams._wasserstein_normed(ref, live)
    expected = [stats.wasserstein_distance(ref[:, i], live[:, i]) for i in range(3)]
    assert ours == pytest.approx(expected)


def test_every_detector_runs_and_the_summary_has_the_documented_keys() -> None:
    policy = DriftPolicy()
    scores = {d: {k: [] for k in bench_drift.KINDS} for d in bench_drift.DETECTORS}
    for stream in bench_drift_streams.streams(TINY, 0):
        for detector, result in bench_drift.run_detectors(stream, policy, TINY).items():
            scores[detector][stream.kind].append(result)
    summary = bench_drift.summarize(scores, policy, 9000, 1.0)
    for key in (
        "abrupt_drifts",
        "abrupt_detected",
        "max_covariate_delay_rows",
        "window_rows",
        "stationary_rows",
        "false_alarms",
    ):
        assert key in summary and key in summary["baselines"]["adwin"]
    assert set(summary["baselines"]) == set(bench_drift.DETECTORS[1:])
    assert summary["abrupt_drifts"] == 2 and summary["per_kind"]["abrupt"]["detected"] == 1
    assert summary["max_covariate_delay_rows"] <= policy.window_rows
    assert summary["false_alarms"] == 0 and summary["stationary_rows"] == 6000
    assert summary["baselines"]["kswin"]["stationary_rows"] == 1000 + 500 + 500
