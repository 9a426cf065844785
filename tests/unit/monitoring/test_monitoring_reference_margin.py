"""Unit tests of the CUSUM bank's reference error rate (issue #17): its margin is what the
false-alarm budget asks for the estimate's uncertainty, and the version's first live labels are
pooled into a profile's rate."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from driftloop.services.monitoring.core.error_detectors import CusumBank, ErrorRateCusum
from driftloop.services.monitoring.core.performance import (
    GLR_SHARE,
    PerformanceReference,
    PerformanceTracker,
    profile_reference,
)
from driftloop.services.monitoring.core.reference_margin import (
    averaged_false_alarms,
    reference_error_rate,
    run_lengths,
)
from driftloop.services.monitoring.core.sequential import glr_threshold
from driftloop.shared.profile import build_profile

pytestmark = pytest.mark.unit

SHIFT = 0.1
BANK_ARL0 = 1e8
"""A bank's budget for the module's own tests (the old default share: 1e7 / (1 - 0.9))."""
TRACKER_ARL0 = 1e7 / (1.0 - GLR_SHARE)
"""The tracker's bank at the default error_arl0_rows."""


def two_se(errors: float, rows: float) -> float:
    """The margin every reference used to get."""
    rate = errors / rows
    return rate + 2.0 * math.sqrt(max(rate * (1 - rate), 1.0 / rows) / rows)


def test_run_length_at_the_reference_rate_is_the_thresholds_own() -> None:
    # At p = p0 the root is theta = 1 and Siegmund's formula is the one the threshold solves.
    for p0, arl0 in ((0.11, 3e8), (0.02, 1e6), (0.3, 1e9)):
        member = ErrorRateCusum(p0, SHIFT, arl0)
        (found,) = run_lengths(member, np.array([p0]))
        assert found == pytest.approx(arl0, rel=1e-3)
    # A true rate above p0 shortens it, below lengthens it.
    member = ErrorRateCusum(0.11, SHIFT, 3e8)
    low, at, high = run_lengths(member, np.array([0.09, 0.11, 0.13]))
    assert low > at > high


@pytest.mark.parametrize(
    ("errors", "rows"), [(220, 2000), (440, 4000), (110, 1000), (40, 2000), (600, 2000), (0, 100)]
)
def test_the_margin_is_the_smallest_within_the_budget(errors: int, rows: int) -> None:
    p0 = reference_error_rate(errors, rows, SHIFT, BANK_ARL0)
    rate = errors / rows
    se = math.sqrt(max(rate * (1 - rate), 1.0 / rows) / rows)
    assert p0 > rate
    assert averaged_false_alarms(p0, SHIFT, BANK_ARL0, errors, rows) <= 1.0 / BANK_ARL0
    # 0.1 SE less margin spends more than the budget: no margin is wasted.
    less = averaged_false_alarms(p0 - 0.1 * se, SHIFT, BANK_ARL0, errors, rows)
    assert less > 1.0 / BANK_ARL0


def test_two_standard_errors_were_too_much_for_a_holdout_and_too_little_for_a_burn_in() -> None:
    budget = 1.0 / BANK_ARL0
    # 2,000 out-of-fold rows at 11%: 2 SE spent under half the budget; the margin is smaller.
    assert averaged_false_alarms(two_se(220, 2000), SHIFT, BANK_ARL0, 220, 2000) < budget / 2
    assert reference_error_rate(220, 2000, SHIFT, BANK_ARL0) < two_se(220, 2000) - 0.002
    # 1,000 live burn-in rows: 2 SE overspent it; the margin is larger.
    assert averaged_false_alarms(two_se(110, 1000), SHIFT, BANK_ARL0, 110, 1000) > budget
    assert reference_error_rate(110, 1000, SHIFT, BANK_ARL0) > two_se(110, 1000)


def reference(accuracy: float, rows: float) -> PerformanceReference:
    return PerformanceReference(
        two_se(rows * (1 - accuracy), rows),
        {"0": 0.5, "1": 0.5},
        round(rows),
        "profile",
        accuracy=accuracy,
        holdout_rows=rows,
    )


def tracker(ref: PerformanceReference | None, burn_in: int = 1000) -> PerformanceTracker:
    return PerformanceTracker(
        ref, burn_in_rows=burn_in, window_rows=500, error_shift=SHIFT, error_arl0=1e7
    )


def feed(t: PerformanceTracker, errors: np.ndarray, batch: int = 50) -> int | None:
    labels = np.where(errors, "1", "0").tolist()
    for begin in range(0, len(labels), batch):
        hit = t.observe(["0"] * len(labels[begin : begin + batch]), labels[begin : begin + batch])
        if hit is not None:
            return begin + hit
    return None


def test_a_profiles_reference_takes_the_budgets_margin() -> None:
    t = tracker(reference(0.89, 2000))
    expected = reference_error_rate(220, 2000, SHIFT, TRACKER_ARL0)
    assert t.reference is not None and t.reference.error_rate == pytest.approx(expected)
    assert t.reference.error_rate < two_se(220, 2000) - 0.002
    assert t.cusum is not None
    assert all(m.p0 == pytest.approx(expected) for m in t.cusum.members)


def test_a_profile_built_by_training_gets_the_same_rate() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 2))
    target = np.where(x[:, 0] > 0, "1", "0")
    frame = pd.DataFrame(x, columns=["a", "b"])
    profile = build_profile(
        "m",
        "1",
        frame,
        pd.Series(target),
        target=pd.Series(target),
        metrics={"accuracy": 0.89, "holdout_rows": 2000.0},
    )
    ref = profile_reference(profile)
    assert ref is not None
    t = tracker(ref)
    assert t.reference is not None
    assert t.reference.error_rate == pytest.approx(
        reference_error_rate(220, 2000, SHIFT, TRACKER_ARL0)
    )


def test_first_live_labels_are_pooled_into_the_profiles_rate() -> None:
    # The profile measured 12% on 2,000 rows; the deployed model errs 10% on live rows.
    rng = np.random.default_rng(11)
    t = tracker(reference(0.88, 2000))
    before = t.reference.error_rate if t.reference else None
    live = rng.random(2000) < 0.10
    assert feed(t, live[:1950]) is None
    assert t.reference is not None and t.reference.source == "profile"  # not yet: 2,000 wanted
    assert feed(t, live[1950:]) is None
    ref = t.reference
    assert ref.source == "profile+live" and ref.holdout_rows == 4000
    errors = 240 + int(live.sum())
    assert ref.accuracy == pytest.approx(1 - errors / 4000)
    assert ref.error_rate == pytest.approx(reference_error_rate(errors, 4000, SHIFT, TRACKER_ARL0))
    assert before is not None and ref.error_rate < before - 0.005
    assert t.cusum is not None and all(m.statistic == 0.0 for m in t.cusum.members)
    assert all(m.p0 == pytest.approx(ref.error_rate) for m in t.cusum.members)


def test_pooling_waits_for_at_least_the_burn_in_and_never_follows_an_alarm() -> None:
    rng = np.random.default_rng(12)
    small = tracker(reference(0.88, 300), burn_in=1000)
    feed(small, rng.random(999) < 0.1)
    assert small.reference is not None and small.reference.source == "profile"
    feed(small, rng.random(1) < 0.1)
    assert small.reference.source == "profile+live" and small.reference.holdout_rows == 1300
    # A change before the live rows are in: the reference is not re-estimated from them.
    changed = tracker(reference(0.90, 2000))
    errors = rng.random(2000) < np.r_[np.full(200, 0.1), np.full(1800, 0.6)]
    assert feed(changed, errors) is not None
    feed(changed, rng.random(1000) < 0.1)
    assert changed.reference is not None and changed.reference.source == "profile"


def first_crossing(bank: CusumBank, errors: np.ndarray) -> int | None:
    for begin in range(0, len(errors), 50):
        hit = bank.update(errors[begin : begin + 50])
        if hit is not None:
            return begin + hit
    return None


def test_pooled_reference_catches_a_moderate_rise_sooner() -> None:
    # A profile 1.5 points pessimistic (out-of-fold models, a noisy holdout), a live error of
    # 11% rising to 16.5% after 3,000 labelled rows: the tracker's CUSUMs, on the pooled rate,
    # cross far sooner than a bank held at the profile's rate with the old 2 SE margin.
    sooner = []
    for seed in range(21, 26):
        rng = np.random.default_rng(seed)
        before, after = rng.random(3000) < 0.11, rng.random(6000) < 0.165
        pooled = tracker(reference(0.875, 2000))
        assert feed(pooled, before) is None and pooled.cusum is not None
        old = CusumBank(two_se(250, 2000), SHIFT, 1e8)
        assert first_crossing(old, before) is None
        found, old_found = first_crossing(pooled.cusum, after), first_crossing(old, after)
        assert found is not None
        sooner.append((old_found or len(after)) - found)
    assert min(sooner) > 0 and float(np.median(sooner)) > 500


def test_live_burn_in_without_a_profile_rate_takes_the_budgets_margin() -> None:
    rng = np.random.default_rng(13)
    t = tracker(None, burn_in=1000)
    live = rng.random(1000) < 0.1
    feed(t, live)
    assert t.reference is not None and t.reference.source == "live"
    errors = int(live.sum())
    assert t.reference.error_rate == pytest.approx(
        reference_error_rate(errors, 1000, SHIFT, TRACKER_ARL0)
    )
    spent = averaged_false_alarms(t.reference.error_rate, SHIFT, TRACKER_ARL0, errors, 1000)
    assert 0.5 / TRACKER_ARL0 < spent <= 1.0 / TRACKER_ARL0


def test_no_false_alarm_over_a_long_stationary_stream_with_a_pooled_reference() -> None:
    # 300k labelled rows at the profile's own rate: the whole bank (CUSUMs, GLR, ADWIN) stays
    # quiet (budget: one false alarm per 1e7 rows).
    rng = np.random.default_rng(14)
    t = PerformanceTracker(
        reference(0.89, 2000),
        burn_in_rows=1000,
        window_rows=500,
        error_shift=SHIFT,
        error_arl0=1e7,
        adwin_delta=0.002,
    )
    assert feed(t, rng.random(300_000) < 0.11, batch=5000) is None
    assert t.reference is not None and t.reference.source == "profile+live"


def test_the_error_rate_budget_is_split_evenly_between_the_glr_and_the_cusum_bank() -> None:
    t = tracker(reference(0.89, 2000))
    assert t.cusum is not None
    # each of the bank's k members runs at k times its share: the rates add up to 1 / (2 x 1e7)
    k = len(t.cusum.members)
    assert all(
        m.threshold == pytest.approx(ErrorRateCusum(m.p0, m.p1 - m.p0, 2e7 * k).threshold)
        for m in t.cusum.members
    )
    assert t.glr.threshold == pytest.approx(glr_threshold(2e7))
