"""Where a label-prior shift began (label_change.py), and what a label-prior decision tells a
retrain: the rows since that change point, not only the rows after the alarm."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.label_change import (
    MAX_CLASSES,
    LabelCodes,
    numeric_change_rows,
)
from driftloop.services.monitoring.core.monitor import ModelMonitor
from driftloop.shared.profile import build_profile

pytestmark = pytest.mark.unit
REFERENCE = {"a": 0.5, "b": 0.3, "c": 0.2}


def draw(rng: np.random.Generator, rows: int, shares: dict[str, float]) -> list[str]:
    return rng.choice(list(shares), size=rows, p=list(shares.values())).tolist()


def change_rows(labels: list[str], frequencies: dict[str, float], reference_rows: int) -> int:
    """The estimate over these labels (oldest first), as the monitor keeps them."""
    codes = LabelCodes(max(1, len(labels)))
    codes.extend(labels)
    return codes.change_rows(frequencies, reference_rows)


@pytest.mark.parametrize("seed", range(5))
def test_the_change_point_of_a_prior_shift_is_found_within_the_window(seed: int) -> None:
    rng = np.random.default_rng(seed)
    after = {"a": 0.3, "b": 0.3, "c": 0.4}
    labels = draw(rng, 600, REFERENCE) + draw(rng, 400, after)
    assert 300 <= change_rows(labels, REFERENCE, 2000) <= 500


def test_a_window_drawn_after_the_change_is_all_since_the_change() -> None:
    rng = np.random.default_rng(11)
    labels = draw(rng, 1000, {"a": 0.2, "b": 0.3, "c": 0.5})
    assert change_rows(labels, REFERENCE, 2000) >= 900


def test_a_class_the_reference_never_saw_marks_the_change() -> None:
    rng = np.random.default_rng(12)
    labels = draw(rng, 700, REFERENCE) + draw(rng, 300, {"a": 0.4, "b": 0.3, "new": 0.3})
    assert 250 <= change_rows(labels, REFERENCE, 2000) <= 350


def test_no_estimate_for_a_short_window_or_a_reference_without_classes() -> None:
    assert change_rows(["a"] * 10, REFERENCE, 2000) == 0
    assert change_rows(["a"] * 500, {}, 2000) == 0
    assert change_rows(["a"] * 500, {"a": 0.0}, 2000) == 0


def test_a_label_prior_decision_reaches_back_to_the_change_not_to_the_alarm() -> None:
    """Predictions and their labels are joined at the rows' own times (one row per 10 ms): a
    label-prior decision's window_end (the time a retrain's rows may start from) lies after the
    change and well before the alarm."""
    rng = np.random.default_rng(3)
    policy = DriftPolicy(triggers=frozenset({"label_prior"}))
    frame = pd.DataFrame({"x": rng.normal(0, 1, 3000)})
    reference = pd.Series(np.where(frame["x"] > 0, "1", "0"))
    monitor = ModelMonitor("m", policy, "1", build_profile("m", "1", frame, reference))
    change, rows, found = 2000, 6000, None
    x = rng.normal(0, 1, rows)
    predictions = np.where(x > 0, "1", "0")
    truth = np.where(
        np.arange(rows) >= change, np.where(rng.random(rows) < 0.25, "1", predictions), predictions
    )
    for start in range(0, rows, 100):
        batch = slice(start, start + 100)
        ids = [str(i) for i in range(start, start + 100)]
        ts = np.arange(start, start + 100) * 0.01
        monitor.observe(
            "1",
            pd.DataFrame(
                {"x": x[batch], "_prediction": predictions[batch], "_request_id": ids, "_ts": ts}
            ),
            now=ts[-1],
        )
        decision = monitor.observe_labels(ids, truth[batch].tolist(), now=ts[-1])
        if decision is not None:
            found = (start + 99, decision)
            break
    assert found is not None, "the prior shift was not detected"
    alarm_row, decision = found
    assert alarm_row > change + 100
    since = decision.window_end / 0.01
    assert change <= since <= alarm_row - 0.5 * (alarm_row - change)


def test_codes_reach_back_past_the_label_window_and_stay_bounded() -> None:
    rng = np.random.default_rng(13)
    codes = LabelCodes(4096)
    codes.extend(draw(rng, 1000, REFERENCE))
    codes.extend(draw(rng, 1500, {"a": 0.3, "b": 0.3, "c": 0.4}))
    assert 1300 <= codes.change_rows(REFERENCE, 2000) <= 1700
    # ever-new labels share one code past MAX_CLASSES: the dictionary does not grow
    flood = LabelCodes(100)
    flood.extend(f"label-{i}" for i in range(MAX_CLASSES + 500))
    assert len(flood) == 100 and len(flood._names) == MAX_CLASSES
    assert flood.change_rows(REFERENCE, 2000) > 0


@pytest.mark.parametrize("seed", range(3))
def test_a_regressors_target_shift_is_dated_over_the_reference_deciles(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sample = rng.normal(300.0, 40.0, 2000)
    live = np.r_[rng.normal(300.0, 40.0, 300), rng.normal(330.0, 40.0, 200)]
    assert 140 <= numeric_change_rows(live, sample) <= 260
    assert numeric_change_rows(live[:20], sample) == 0, "too few labels"
    assert numeric_change_rows(live, sample[:15]) == 0, "too small a sample to cut"
    assert numeric_change_rows(live, np.full(2000, 7.0)) > 0, "a tied sample still cuts once"
