"""The fleet benchmark's stream: deterministic for a seed block by block, per-route models beat a
global one, the roadworks change exactly the announced routes' delays (and hurt only their
models), the weather shift moves rain on every route without changing the delay function, and the
post-drift reference recovers what the drift cost."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from driftloop.shared.cli.bench import fleet_stream as fs

pytestmark = pytest.mark.unit

SMALL = fs.FleetStream(routes=20, rows_per_route=300, seed=4, roadworks_at=2, weather_at=4)
"""Blocks 0-1 before, 2-3 roadworks (one route of 20), 4- weather."""


def quick_fit(features: pd.DataFrame, target: np.ndarray) -> fs.Regressor:
    model: fs.Regressor = HistGradientBoostingRegressor(random_state=0, max_iter=50).fit(
        features, target
    )
    return model


@pytest.fixture(scope="module")
def blocks() -> dict[str, pd.DataFrame]:
    return {"before": SMALL.rows(1), "roadworks": SMALL.rows(3), "weather": SMALL.rows(5)}


@pytest.fixture(scope="module")
def models() -> dict[int, fs.Regressor]:
    """Per-route models fitted on block 0 (before any drift)."""
    return fs.fit_per_route(SMALL.rows(0), quick_fit)


def test_a_block_is_every_route_interleaved_and_numbered_by_its_rows_in_the_stream() -> None:
    stream = fs.FleetStream(routes=30, rows_per_route=7, seed=1)
    block = stream.rows(3)
    assert tuple(block.columns) == fs.COLUMNS
    assert list(block.index) == list(range(3 * 210, 4 * 210)) and stream.first_row(4) == 840
    assert (block[fs.PARTITION].value_counts() == 7).all() and block[fs.PARTITION].nunique() == 30
    assert not block[fs.PARTITION].is_monotonic_increasing
    assert block.notna().all().all()
    stops = stream.params.stops[block[fs.PARTITION]]
    assert ((block["stop_seq"] >= 0) & (block["stop_seq"] < stops)).all()
    assert block["hour"].between(*fs.HOURS).all() and block["day_of_week"].between(0, 6).all()
    assert (block[fs.WEATHER] >= 0).all() and (block["traffic"] >= 0).all()
    listed = list(stream.blocks(2, 4))
    assert len(listed) == 2 and listed[1].equals(block)


def test_the_stream_is_deterministic_for_a_seed_block_by_block() -> None:
    first = fs.FleetStream(routes=50, rows_per_route=10, seed=7)
    again = fs.FleetStream(routes=50, rows_per_route=10, seed=7)
    other = fs.FleetStream(routes=50, rows_per_route=10, seed=8)
    assert first.rows(60).equals(again.rows(60))  # no earlier block drawn by `again`
    assert first.rows(3).equals(again.rows(3))
    assert first.drifted_routes() == again.drifted_routes()
    assert first.pool(5, "weather", 100).equals(again.pool(5, "weather", 100))
    assert not first.rows(3).equals(other.rows(3))
    assert not np.array_equal(first.rows(3).to_numpy(), first.rows(4).to_numpy())
    assert not first.pool(5, "weather", 100).equals(first.pool(5, "weather", 100, draw=1))


def test_phases_follow_the_announced_blocks() -> None:
    stream = fs.FleetStream(roadworks_at=10, weather_at=25)
    phases = [stream.phase_of(b) for b in (0, 9, 10, 24, 25, 1000)]
    assert phases == ["before", "before", "roadworks", "roadworks", "weather", "weather"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"routes": 0}, "at least one route"),
        ({"rows_per_route": 0}, "at least one route"),
        ({"roadworks_fraction": 1.5}, "roadworks_fraction"),
        ({"roadworks_at": 30, "weather_at": 20}, "no later than the weather shift"),
    ],
)
def test_a_bad_configuration_is_refused_with_what_to_fix(
    change: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(fs.FleetStream(), **change)


def test_a_pool_outside_the_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="route 20 is not one of the stream's 0 .. 19"):
        SMALL.pool(20, "before", 10)
    with pytest.raises(ValueError, match="unknown phase 'snow'"):
        SMALL.pool(0, "snow", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one row"):
        SMALL.pool(0, "before", 0)
    with pytest.raises(ValueError, match="numbered from 0"):
        SMALL.rows(-1)


def test_roadworks_are_on_exactly_the_announced_share_of_routes() -> None:
    stream = fs.FleetStream(routes=1000, rows_per_route=40, seed=2)
    drifted = stream.drifted_routes()
    assert len(drifted) == 50 and drifted <= set(range(1000))
    assert drifted != fs.FleetStream(routes=1000, seed=3).drifted_routes()
    # the same features, the delay function before and during the roadworks
    features = stream.rows(0)
    moved = stream.expected_delay(features, "roadworks") - stream.expected_delay(features, "before")
    changed = set(features.loc[moved != 0, fs.PARTITION].tolist())
    assert changed == drifted
    per_route = pd.Series(moved).groupby(features[fs.PARTITION].to_numpy()).mean()
    assert per_route[sorted(drifted)].min() > 30.0  # seconds, on average over the route's stops


def test_only_the_roadworks_routes_delays_move_before_the_weather_shift() -> None:
    stream = fs.FleetStream(routes=40, rows_per_route=400, seed=5, roadworks_at=1, weather_at=2)
    before, during = stream.rows(0), stream.rows(1)
    drifted = stream.drifted_routes()
    assert len(drifted) == 2
    means = [b.groupby(fs.PARTITION)[fs.TARGET].agg(["mean", "var"]) for b in (before, during)]
    error = np.sqrt((means[0]["var"] + means[1]["var"]) / 400)
    z = (means[1]["mean"] - means[0]["mean"]) / error
    assert (z[sorted(drifted)] > 10).all()
    # 38 routes unchanged: all within 4 standard errors (a stationary route fails 1 in 16,000)
    assert (z.drop(sorted(drifted)).abs() < 4).all()
    for column in fs.FEATURES:
        assert stats.ks_2samp(before[column], during[column]).pvalue > 1e-3, column


def test_per_route_models_beat_one_global_model(
    blocks: dict[str, pd.DataFrame], models: dict[int, fs.Regressor]
) -> None:
    test = blocks["before"]
    per_route = np.mean(list(fs.mae_per_route(models, test).values()))
    train = SMALL.rows(0)
    for columns, margin in (([fs.PARTITION, *fs.FEATURES], 1.1), (list(fs.FEATURES), 1.4)):
        with threadpool_limits(1):  # OpenMP threads only slow small fits on a busy machine
            model = quick_fit(train[columns], train[fs.TARGET].to_numpy())
            global_mae = float(np.abs(model.predict(test[columns]) - test[fs.TARGET]).mean())
        assert global_mae > margin * per_route, (columns, global_mae, per_route)
    # and the per-route models are near the noise floor (MAE of a normal noise is 0.8 sd)
    assert per_route < 1.5 * np.mean(0.8 * SMALL.params.noise)


def test_roadworks_hurt_their_routes_models_far_beyond_noise_and_no_others(
    blocks: dict[str, pd.DataFrame], models: dict[int, fs.Regressor]
) -> None:
    before = fs.mae_per_route(models, blocks["before"])
    during = fs.mae_per_route(models, blocks["roadworks"])
    (drifted,) = SMALL.drifted_routes()
    assert during[drifted] > 3 * before[drifted]
    ratios = [during[r] / before[r] for r in before if r != drifted]
    assert max(ratios) < 1.25 and 0.9 < np.median(ratios) < 1.1


def test_the_weather_shift_moves_rain_on_every_route_and_nothing_else(
    blocks: dict[str, pd.DataFrame], models: dict[int, fs.Regressor]
) -> None:
    dry, wet = blocks["roadworks"], blocks["weather"]
    for route in range(SMALL.routes):
        a, b = (f[f[fs.PARTITION] == route] for f in (dry, wet))
        assert stats.ks_2samp(a[fs.WEATHER], b[fs.WEATHER]).statistic > 0.3, route
    for column in set(fs.FEATURES) - {fs.WEATHER}:
        assert stats.ks_2samp(dry[column], wet[column]).pvalue > 1e-3, column
    assert wet[fs.WEATHER].mean() > 3 * dry[fs.WEATHER].mean()
    # covariate drift only: the delay of given features is the roadworks phase's
    assert np.array_equal(
        SMALL.expected_delay(wet, "weather"), SMALL.expected_delay(wet, "roadworks")
    )
    # yet every model fitted on the drier weather is worse, moderately (less than the roadworks)
    before = fs.mae_per_route(models, blocks["before"])
    after = fs.mae_per_route(models, wet)
    (drifted,) = SMALL.drifted_routes()
    ratios = np.array([after[r] / before[r] for r in before if r != drifted])
    assert ratios.min() > 1.2 and 1.4 < np.median(ratios) < 2.2


def test_the_post_drift_reference_recovers_what_the_drift_cost(
    blocks: dict[str, pd.DataFrame], models: dict[int, fs.Regressor]
) -> None:
    (drifted,) = SMALL.drifted_routes()
    test = blocks["roadworks"]
    test = test[test[fs.PARTITION].isin([drifted, (drifted + 1) % SMALL.routes])]
    reference = fs.reference_mae(SMALL, test, "roadworks", quick_fit, train_rows=600)
    stale = fs.mae_per_route(models, test)
    assert reference.keys() == stale.keys() == {drifted, (drifted + 1) % SMALL.routes}
    assert reference[drifted] < stale[drifted] / 4
    floor = 0.8 * SMALL.params.noise[drifted]
    assert reference[drifted] < 1.5 * floor
    assert fs.reference_mae(SMALL, test, "roadworks", quick_fit, train_rows=600) == reference
