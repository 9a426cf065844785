"""The recovery benchmark's arithmetic: version changes, the recovery row against the reference,
rows the reference needed, the judgement of a promotion, medians with episodes that never
recovered, request ids as serving logs them, and one stream's report end to end (JSON-clean)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from driftloop.services.serving.core.prediction_log import (
    REQUEST_ID,
    PredictionLogger,
    PredictionRecord,
)
from driftloop.shared.cli.bench import recovery_metrics as m
from driftloop.shared.cli.bench import recovery_streams as rs
from driftloop.shared.cli.bench.recovery_driver import (
    Records,
    Run,
    Served,
    request_id,
    row_request_id,
)
from driftloop.shared.cli.bench.recovery_report import stream_report, summarise
from driftloop.shared.records import ipc_to_table
from driftloop.shared.registry_types import AliasChange

pytestmark = pytest.mark.unit


def ladder(rows: int, accuracy: dict[int, float], target: int) -> m.Ladder:
    """Reference draws right on the first `accuracy[k]` share of every block of 100 rows."""
    pattern = {k: (np.arange(rows) % 100) < round(100 * a) for k, a in accuracy.items()}
    return m.Ladder({k: np.array([p, p]) for k, p in pattern.items()}, target)


def served_correct(rows: int, share: float) -> np.ndarray:
    return (np.arange(rows) % 100) < round(100 * share)


def test_switches_are_the_changes_of_the_answering_version() -> None:
    versions = ["1", "1", "", "2", "2", "", "3", "1", "1"]
    found = m.switches(versions)
    assert [(s.row, s.version, s.previous, s.end) for s in found] == [
        (3, "2", "1", 6),
        (6, "3", "2", 7),
        (7, "1", "3", 9),
    ]
    assert [s.row for s in m.switches(versions, start=5)] == [6, 7]
    assert m.switches(["1", "1"]) == []


def test_recovery_is_the_first_change_after_which_serving_matches_the_reference() -> None:
    rows = 2000
    correct = np.concatenate([served_correct(1000, 0.80), served_correct(1000, 0.89)])
    reference = ladder(rows, {500: 0.85, 1600: 0.90}, 1600)
    assert m.recovery_row(correct, reference, [400, 1000, 1500]) == 1000, "within one point"
    assert m.recovery_row(correct, reference, [400]) is None, "still worse after row 400"
    assert m.recovery_row(correct, reference, [1000], min_after=1001) is None, "too few rows"
    strict = ladder(rows, {1600: 0.91}, 1600)
    assert m.recovery_row(correct, strict, [1000]) is None, "two points short"


def test_rows_the_reference_needed_is_the_smallest_rung_that_reaches_the_loop() -> None:
    reference = ladder(1000, {50: 0.70, 200: 0.86, 500: 0.88, 1600: 0.89, 4000: 0.91}, 1600)
    rows = slice(0, 1000)
    assert reference.rows_needed(rows, 0.88) == 500
    assert reference.rows_needed(rows, 0.60) == 50
    assert reference.rows_needed(rows, 0.90) == 1600, "capped at the target's accuracy"
    assert reference.rows_needed(rows, 0.95) == 1600
    assert reference.target(rows) == pytest.approx(0.89)


def test_a_promotion_is_worse_only_when_the_replaced_version_was_clearly_better() -> None:
    change = m.Switch(100, "3", "2", 1100)
    old = served_correct(1000, 0.88)
    worse = old.copy()
    worse[np.flatnonzero(old)[:60]] = False  # 6 points lost, none gained
    judged = m.judge(change, worse, old)
    assert judged.worse and judged.p_value is not None and judged.p_value < 1e-6
    assert (judged.accuracy, judged.previous_accuracy) == (0.82, 0.88)
    assert not m.judge(change, old, old).worse, "equal answers"
    noisy = old.copy()
    noisy[np.flatnonzero(old)[:3]] = False
    noisy[np.flatnonzero(~old)[:1]] = True
    assert not m.judge(change, noisy, old).worse, "3 lost vs 1 gained is noise"
    assert m.judge(change, worse, None).p_value is None, "replaced version unknown: not judged"
    short = m.judge(change, worse[:50], old[:50])
    assert short.p_value is None and not short.worse


def test_medians_count_an_episode_that_never_recovered_as_infinitely_slow() -> None:
    assert m.median_or_none([100, None, 300]) == 300
    assert m.median_or_none([100, None]) is None
    assert m.median_or_none([100, 200]) == 150
    assert m.median_or_none([]) is None


def test_rows_at_counts_answers_up_to_a_time() -> None:
    times = np.array([1.0, 1.0, 2.0, 3.0])
    assert [m.rows_at(times, t) for t in (0.5, 1.0, 2.5, 9.0)] == [0, 2, 3, 4]


def test_the_reference_ladder_learns_the_new_regime() -> None:
    shape = rs.Shape(
        train_rows=2000, live_rows=2000, drift_row=500, transition_rows=200, pool_rows=6000
    )
    stream = rs.make(next(r for r in rs.RECIPES if r.name == "sea-abrupt-9to8"), shape, 0, 0.0)
    spec = m.model_spec(stream.features)
    built = m.build_ladder(stream.after, stream.live, list(stream.features), spec, m.LADDER)
    assert built.target_rows == 1600 and 1600 in built.correct
    assert max(built.correct) == 4000 and built.correct[100].shape == (3, 2000)
    post = slice(500, 2000)
    assert built.accuracy(1600, post) > built.accuracy(1600, slice(0, 500)) + 0.03
    assert built.accuracy(1600, post) == pytest.approx(0.89, abs=0.03)


async def test_request_ids_are_the_ones_serving_logs() -> None:
    logged: list[bytes] = []

    async def publish(model: str, version: str, data: bytes, rows: int) -> None:
        logged.append(data)

    logger = PredictionLogger(publish)
    total = 23  # two full requests of 10 rows, one of 3; and a single-row request below
    for first, rows in ((0, 10), (10, 10), (20, 3)):
        frame = pd.DataFrame({"x0": np.zeros(rows)})
        record = PredictionRecord(
            "m", "1", frame, request_id("m", first), np.array(["0"] * rows), 0.0
        )
        logger.offer(record)
    single = pd.DataFrame({"x0": [0.0]})
    logger.offer(PredictionRecord("m", "1", single, request_id("m", 0), np.array(["0"]), 0.0))
    await logger.flush()
    ids = [i for data in logged for i in ipc_to_table(data).column(REQUEST_ID).to_pylist()]
    assert ids == [row_request_id("m", r, total) for r in range(total)] + ["m-0"]
    assert ids[:2] == ["m-0:0", "m-0:1"] and ids[22] == "m-20:2"


SHAPE = rs.Shape(
    train_rows=2000, live_rows=2000, drift_row=500, transition_rows=200, pool_rows=6000
)


@pytest.fixture(scope="module")
def sea() -> tuple[rs.Stream, m.Ladder]:
    stream = rs.make(next(r for r in rs.RECIPES if r.name == "sea-abrupt-9to8"), SHAPE, 0, 0.0)
    spec = m.model_spec(stream.features)
    return stream, m.build_ladder(stream.after, stream.live, list(stream.features), spec, m.LADDER)


def serve(stream: rs.Stream, wrong_every: int, v2_from: int, v2_wrong_every: int) -> Served:
    """v1 answers right until row 700, then wrong on every `wrong_every`-th row; v2 answers
    from row `v2_from`, wrong on every `v2_wrong_every`-th row (0: never)."""
    truth = stream.live[rs.TARGET].to_numpy()
    wrong = np.where(truth == "1", "0", "1")
    rows = np.arange(len(truth))
    miss = (rows % wrong_every == 0) & (rows >= 700)
    if v2_wrong_every:
        miss[v2_from:] = rows[v2_from:] % v2_wrong_every == 0
    else:
        miss[v2_from:] = False
    served = Served()
    for row in rows:
        answer = wrong[row] if miss[row] else truth[row]
        served.add("1" if row < v2_from else "2", [str(answer)], 100.0 + row / 50)
    return served


def report(stream: rs.Stream, ladder: m.Ladder, served: Served) -> dict:
    records = Records(
        # one detection before the drift, one when row 900 was answered
        detections=[100.0 + 5.0, 100.0 + 900 / 50],
        runs=[Run(99.0, "auto", "1", True, ""), Run(100.0 + 950 / 50, "drift", "2", True, "")],
        moves=[AliasChange("production", "2", "1", "better", "registry", 100.0 + 1190 / 50)],
        versions={},
    )
    judged = [m.judge(s, np.ones(s.end - s.row, bool), None) for s in m.switches(served.versions)]
    return stream_report(stream, served, records, judged, ladder, 100.0, 300)


def test_one_episode_report_and_the_summary(sea: tuple[rs.Stream, m.Ladder]) -> None:
    stream, built = sea
    row = report(stream, built, serve(stream, 5, 1200, 0))

    assert (row["alarms_before_drift"], row["detections"]) == (1, 1)
    assert (row["retrains"], row["promotions"], row["worse_promotions"]) == (1, 1, 0)
    assert row["rows_to_detection"] == 401 and row["seconds_to_detection"] == 8.0
    assert row["recovered"] and row["rows_to_recovery"] == 700 and row["recovery_version"] == "2"
    assert row["seconds_to_recovery"] == 14.0
    assert row["accuracy_before"] == 1.0 and row["accuracy_after"] == 1.0
    assert row["accuracy_during"] == pytest.approx(1 - 0.2 * 500 / 700, abs=0.002)
    assert row["rows_over_reference"] == round(700 / row["reference_rows"], 3)
    assert row["reference_rows"] <= built.target_rows, "serving was perfect: capped at the target"
    assert built.accuracy(row["reference_rows"], slice(1200, 2000)) >= built.target(
        slice(1200, 2000)
    )
    summary = summarise([row])
    assert summary["episodes"] == summary["episodes_recovered"] == 1
    assert summary["median_rows_to_recovery"] == 700
    for key in ("worse_promotions", "stationary_retrains", "harmless_shift_promotions"):
        assert summary[key] == 0
    json.dumps({**summary, "streams": [row]}, allow_nan=False)


def test_an_episode_that_stalls_below_the_reference_is_not_recovered(
    sea: tuple[rs.Stream, m.Ladder],
) -> None:
    stream, built = sea
    short = report(stream, built, serve(stream, 5, 1200, 7))  # v2: 85.7%, reference ~89%
    assert not short["recovered"] and short["rows_to_recovery"] is None
    assert short["after_from_row"] == 1200 and short["accuracy_after"] == pytest.approx(
        6 / 7, abs=0.002
    )
    assert short["reference_accuracy"] > short["accuracy_after"] + 0.01
    never = report(stream, built, serve(stream, 5, 2000, 0))  # v1 to the end
    assert never["after_from_row"] is None and never["accuracy_after"] is None
    assert never["accuracy_during"] == pytest.approx(1 - 0.2 * 1300 / 1500, abs=0.002)
    summary = summarise([short, never, report(stream, built, serve(stream, 5, 1200, 0))])
    assert (summary["episodes"], summary["episodes_recovered"]) == (3, 1)
    assert summary["median_rows_to_recovery"] is None, "two of three never recovered"
    json.dumps(summary, allow_nan=False)
