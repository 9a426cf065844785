"""Unit tests of `driftloop bench drift`'s parts: scoring, stream generation, the Evidently
reproduction, and one small run of every detector (figures, not timings)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.shared.cli.bench import drift as bench_drift
from driftloop.shared.cli.bench import drift_streams as bench_drift_streams
from driftloop.shared.cli.bench.replay import LabelledStream, StreamScore, score

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
    concept = []
    for stream in bench_drift_streams.streams(TINY, 0):
        found = bench_drift.run_detectors(stream, policy, TINY)
        for detector, result in found.items():
            scores[detector][stream.kind].append(result)
        if stream.kind == "concept":
            concept.append(bench_drift.concept_row(stream, found))
    summary = bench_drift.summarize(scores, policy, 9000, 1.0)
    summary.update(bench_drift.concept_summary(concept, summary["baselines"]))
    assert [r["stream"] for r in summary["concept_streams"]] == ["concept-0"]
    assert (
        summary["concept_streams"][0]["error_after"] > summary["concept_streams"][0]["error_before"]
    )
    assert set(summary["concept_streams"][0]["delay_rows"]) == set(bench_drift.DETECTORS)
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


def test_concept_summary_compares_with_the_best_baseline_that_meets_the_same_bar() -> None:
    def figs(false_alarms: int, detected: int, median: float, worst: float) -> dict[str, object]:
        concept = {"drifts": 2, "detected": detected, "delay_median": median, "delay_max": worst}
        return {
            "false_alarms": false_alarms,
            "concept_delay_rows_median": median,
            "per_kind": {"concept": concept},
        }

    baselines = {
        "adwin": figs(0, 2, 150, 300),
        "page_hinkley": figs(3, 2, 100, 120),  # faster, but raises false alarms: not fair
        "kswin": figs(0, 1, 50, 50),  # misses one drift: not fair
    }
    rows = [
        {"stream": "a", "delay_rows": {"driftloop": 100, "adwin": 100, "page_hinkley": 90}},
        {"stream": "b", "delay_rows": {"driftloop": 200, "adwin": 300, "page_hinkley": 150}},
    ]
    summary = bench_drift.concept_summary(rows, baselines)
    assert summary["concept_fair_baselines"] == ["adwin"]
    assert summary["concept_best_baseline"] == "adwin"
    assert summary["best_baseline_concept_delay_rows_median"] == 150
    assert summary["concept_delay_no_worse_than_best_baseline"] is True
    assert summary["concept_streams_no_worse_than_every_fair_baseline"] == 2
    rows[1]["delay_rows"]["driftloop"] = 400  # now slower than ADWIN at the max
    assert (
        bench_drift.concept_summary(rows, baselines)["concept_delay_no_worse_than_best_baseline"]
        is False
    )
