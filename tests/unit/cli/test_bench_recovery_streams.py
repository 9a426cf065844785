"""The recovery benchmark's streams: cut as documented, deterministic for a seed, and calibrated
so that each kind of drift moves the pre-drift model's error by what the kind says; the check
itself fails a stream whose drift is not what its kind claims."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from driftloop.shared.cli.bench import recovery_streams as rs
from driftloop.shared.cli.bench.recovery import make_plan
from driftloop.shared.cli.bench.recovery_metrics import model_spec

pytestmark = pytest.mark.unit

SHAPE = rs.Shape(
    train_rows=2000, live_rows=3000, drift_row=750, transition_rows=400, pool_rows=6000
)
SPEC = model_spec(())
RECIPE = {r.name: r for r in rs.RECIPES}


def test_a_stream_is_cut_into_pools_training_and_live_rows_around_its_drift() -> None:
    abrupt = rs.make(RECIPE["sea-abrupt-9to8"], SHAPE, 3, 0.0)
    assert (len(abrupt.before), len(abrupt.train), len(abrupt.live), len(abrupt.after)) == (
        6000,
        2000,
        3000,
        6000,
    )
    assert abrupt.features == ("x0", "x1", "x2")
    assert (abrupt.drift_start, abrupt.drift_at, abrupt.drift_end) == (750, 750, 750)
    x, y = abrupt.live[["x0", "x1"]].sum(axis=1), abrupt.live[rs.TARGET] == "1"
    # SEA: the label is x0 + x1 > threshold, 10% flipped; variant 1 (9) before, 0 (8) after
    assert ((x > 9) == y)[:750].mean() == pytest.approx(0.9, abs=0.04)
    assert ((x > 8) == y)[750:].mean() == pytest.approx(0.9, abs=0.03)
    gradual = rs.make(RECIPE["sea-gradual"], SHAPE, 3, 0.0)
    assert (gradual.drift_start, gradual.drift_at, gradual.drift_end) == (750, 950, 1150)
    stationary = rs.make(RECIPE["sea-stationary"], SHAPE, 3, 0.0)
    assert stationary.drift_start is stationary.drift_at is None


def test_streams_are_deterministic_for_a_seed() -> None:
    first = rs.make(RECIPE["hyperplane-incremental"], SHAPE, 5, 0.3)
    again = rs.make(RECIPE["hyperplane-incremental"], SHAPE, 5, 0.3)
    other = rs.make(RECIPE["hyperplane-incremental"], SHAPE, 6, 0.3)
    assert first.live.equals(again.live) and first.after.equals(again.after)
    assert not first.live.equals(other.live)


def test_a_harmless_shift_moves_the_features_but_not_the_concept() -> None:
    gauss = rs.make(RECIPE["gauss-harmless-boundary"], SHAPE, 1, 0.0)
    before, after = gauss.live.iloc[:750], gauss.live.iloc[750:]
    assert stats.ks_2samp(before["x1"], after["x1"]).pvalue < 1e-6
    margin = [
        part[["x0", "x1", "x2", "x3"]].to_numpy() @ rs.GAUSS_WEIGHTS for part in (before, after)
    ]
    assert stats.ks_2samp(*margin).pvalue > 1e-3


@pytest.mark.parametrize(
    "name", ["sea-abrupt-9to8", "hyperplane-abrupt", "sea-harmless-boundary", "sea-stationary"]
)
def test_calibration_puts_each_stream_in_its_kinds_range(name: str) -> None:
    (stream,) = rs.streams((name,), SHAPE, 0, SPEC)
    c = stream.calibration
    assert c is not None and c.ok, c
    if stream.kind in rs.MODERATE_KINDS:
        assert rs.MODERATE[0] <= c.rise <= rs.MODERATE[1]
        assert c.reference_error < c.error_after - 0.02, "a model fit after the drift does better"
    else:
        assert abs(c.rise) <= rs.HARMLESS
    assert 0.09 < c.error_before < 0.14, "the error floor is the 10% flipped labels"


def test_the_check_fails_a_drift_that_is_not_what_its_kind_claims() -> None:
    moderate = rs.make(RECIPE["sea-abrupt-9to8"], SHAPE, 0, 0.0)
    assert not rs.calibrate(dataclasses.replace(moderate, kind="harmless"), SPEC).ok
    assert not rs.calibrate(dataclasses.replace(moderate, kind="stationary"), SPEC).ok
    harmless = rs.make(RECIPE["sea-harmless-irrelevant"], SHAPE, 0, 0.0)
    assert not rs.calibrate(dataclasses.replace(harmless, kind="abrupt"), SPEC).ok


def test_a_solved_hyperplane_drift_grows_with_its_magnitude() -> None:
    recipe = RECIPE["hyperplane-abrupt"]
    rises = [rs.calibrate(rs.make(recipe, SHAPE, 2, m), SPEC).rise for m in (0.0, 0.3, 1.0)]
    assert abs(rises[0]) <= rs.HARMLESS
    assert rises[0] < rises[1] < rises[2]


def test_the_plan_quick_and_full() -> None:
    quick = make_plan(True, 8000, 50.0, 300)
    assert quick.streams == rs.QUICK_RECIPES and quick.shape.live_rows == 4000
    full = make_plan(False, 8000, 50.0, 300)
    assert set(full.streams) == {r.name for r in rs.RECIPES}
    assert {RECIPE[n].kind for n in full.streams} == set(rs.KINDS)
    assert (full.shape.drift_row, full.shape.transition_rows) == (2000, 1000)
    assert np.isclose(full.rate, 50.0)
    with pytest.raises(Exception, match="2000 rows"):
        make_plan(False, 1500, 50.0, 300)
