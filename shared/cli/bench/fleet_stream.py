"""The stream of `driftloop bench fleet`: a seeded transit-like regression stream (routes x stops,
target the arrival delay in seconds) with roadworks on a known share of routes and one city-wide
weather shift at known blocks, and the post-drift reference models per route (the recovery target).

Time is counted in blocks. Block k holds `rows_per_route` rows of every route, interleaved in a
seeded order, and is the same for a seed whatever else was drawn before it. Within a phase the
rows are i.i.d. (time of day and day of week are drawn per row), so a stationary phase looks the
same in every block and a monitor has nothing to find there. A row's index is its number in the
whole stream (block * rows per block + position), so a drift is at a known row as well as block.

Phases (`phase_of`):
- "before": blocks before `roadworks_at`;
- "roadworks": from `roadworks_at`, the drifted routes (`drifted_routes()`, a seeded
  `roadworks_fraction` of them) gain a large delay at and after their works' stop that grows with
  traffic; every other route, and every feature's distribution, is unchanged;
- "weather": from `weather_at`, rain is heavier and more frequent on every route (covariate drift:
  the delay function stays as it was, but the delay grows faster than linearly with rain, so
  every model fitted on the drier weather under-predicts); the roadworks stay.

Each route has its own base delay, delay gained per stop, rush hours, congested segment, and
sensitivity to traffic, weekends, rain and headway (drawn once per seed), so one model per route
beats one global model (with or without the route id among its features).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

Phase = Literal["before", "roadworks", "weather"]
PHASES: tuple[Phase, ...] = ("before", "roadworks", "weather")
PARTITION = "route_id"
TARGET = "delay_s"
WEATHER = "rain_mm"
FEATURES = ("stop_seq", "hour", "day_of_week", "headway_s", WEATHER, "traffic")
"""What a per-route model sees (the partition column is constant within a route)."""
COLUMNS = (PARTITION, *FEATURES, TARGET)

HOURS = (5.0, 24.0)
"""Service hours: a row's time of day is uniform in [5:00, 24:00)."""
HEADWAYS = np.array([300, 450, 600, 900, 1200, 1800])
"""Off-peak scheduled headways a route may have, in seconds (halved in the rush hours)."""
RAIN_KNEE_MM = 8.0
"""The rain effect is `sensitivity * rain * (1 + rain / RAIN_KNEE_MM)` seconds: mild drizzle
costs little, a downpour a lot (standing water, slow boarding)."""


@dataclass(frozen=True)
class Weather:
    """Rain per row: none with probability 1 - wet, else Gamma(shape, scale) mm."""

    wet: float
    shape: float
    scale: float


DRY = Weather(wet=0.25, shape=1.5, scale=1.5)
"""Before the shift: rain on a quarter of the rows, 2.25 mm on average when it rains."""
STORMY = Weather(wet=0.7, shape=2.0, scale=2.5)
"""After the city-wide shift: rain on 70% of the rows, 5 mm on average when it rains."""

_ROUTES, _BLOCK, _POOL = 0, 1, 2
"""The first words of the seed sequences of the route parameters, the blocks and the pools."""


class Regressor(Protocol):
    def predict(self, features: pd.DataFrame) -> Any: ...


Fit = Callable[[pd.DataFrame, np.ndarray], Regressor]
"""(features, targets) of one route -> a fitted model."""


@dataclass(frozen=True)
class Routes:
    """Every route's parameters, indexed by route id (0 .. routes-1); seconds unless named."""

    stops: np.ndarray
    """Stops of the route: stop_seq is 0 .. stops-1."""
    base: np.ndarray
    """Delay at the first stop with no traffic, rush, rain or headway."""
    per_stop: np.ndarray
    """Delay gained per stop along the route."""
    traffic: np.ndarray
    """Seconds per unit of the traffic index."""
    morning: np.ndarray
    """Hour of the route's morning peak."""
    evening: np.ndarray
    """Hour of the route's evening peak."""
    morning_delay: np.ndarray
    """Seconds at the height of the morning peak (beyond what its traffic costs)."""
    evening_delay: np.ndarray
    """Seconds at the height of the evening peak."""
    bottleneck: np.ndarray
    """First stop of the route's congested segment."""
    bottleneck_end: np.ndarray
    """First stop after it."""
    per_bottleneck: np.ndarray
    """Seconds per unit of traffic index in the congested segment."""
    weekend: np.ndarray
    """Seconds on Saturdays and Sundays (day_of_week 5 and 6; negative: lighter days)."""
    rain: np.ndarray
    """Seconds per mm of rain (before the knee's growth)."""
    headway: np.ndarray
    """Off-peak scheduled headway."""
    per_headway: np.ndarray
    """Seconds per 10 minutes of scheduled headway (fuller buses board slower)."""
    congestion: np.ndarray
    """The route's traffic index off-peak."""
    noise: np.ndarray
    """Standard deviation of the delay around its mean."""
    works_stop: np.ndarray
    """First stop behind the roadworks (on a drifted route)."""
    works: np.ndarray
    """Delay the roadworks add at a traffic index of 0 (three times as much at 1)."""

    @staticmethod
    def draw(count: int, rng: np.random.Generator) -> Routes:
        stops = rng.integers(12, 41, count)
        bottleneck = np.floor(stops * rng.uniform(0.0, 0.6, count)).astype(np.int64)
        noise = rng.uniform(15.0, 35.0, count)
        return Routes(
            stops=stops,
            base=rng.normal(40.0, 40.0, count),
            per_stop=rng.uniform(1.0, 6.0, count),
            traffic=rng.uniform(20.0, 200.0, count),
            morning=rng.uniform(7.0, 9.0, count),
            evening=rng.uniform(16.0, 19.0, count),
            morning_delay=rng.uniform(0.0, 150.0, count),
            evening_delay=rng.uniform(0.0, 150.0, count),
            bottleneck=bottleneck,
            bottleneck_end=bottleneck
            + np.ceil(stops * rng.uniform(0.15, 0.35, count)).astype(np.int64),
            per_bottleneck=rng.uniform(0.0, 200.0, count),
            weekend=rng.uniform(-60.0, 40.0, count),
            # why in proportion to the noise: the weather shift then costs every route's model
            # a like share of its error (a moderate drift everywhere, none lost in the noise)
            rain=noise * rng.uniform(0.2, 0.35, count),
            headway=rng.choice(HEADWAYS, count),
            per_headway=rng.uniform(-10.0, 20.0, count),
            congestion=rng.uniform(0.1, 0.6, count),
            noise=noise,
            works_stop=np.floor(stops * rng.uniform(0.2, 0.6, count)).astype(np.int64),
            works=rng.uniform(90.0, 180.0, count),
        )


@dataclass(frozen=True)
class FleetStream:
    """The stream of `routes` routes, deterministic for `seed` (see the module's docstring)."""

    routes: int = 1000
    rows_per_route: int = 20
    """Rows of every route in one block."""
    seed: int = 0
    roadworks_fraction: float = 0.05
    roadworks_at: int = 50
    """First block of the roadworks phase."""
    weather_at: int = 100
    """First block of the weather phase."""

    def __post_init__(self) -> None:
        if self.routes < 1 or self.rows_per_route < 1:
            raise ValueError(
                f"a fleet stream needs at least one route and one row per route per block, "
                f"not routes={self.routes} rows_per_route={self.rows_per_route}"
            )
        if not 0.0 <= self.roadworks_fraction <= 1.0:
            raise ValueError(f"roadworks_fraction must be in [0, 1], not {self.roadworks_fraction}")
        if not 0 <= self.roadworks_at <= self.weather_at:
            raise ValueError(
                f"the roadworks (block {self.roadworks_at}) must start at block 0 or later and "
                f"no later than the weather shift (block {self.weather_at})"
            )

    @cached_property
    def params(self) -> Routes:
        return Routes.draw(self.routes, np.random.default_rng((self.seed, _ROUTES)))

    @cached_property
    def _drifted(self) -> np.ndarray:
        count = round(self.roadworks_fraction * self.routes)
        rng = np.random.default_rng((self.seed, _ROUTES, 1))
        mask = np.zeros(self.routes, dtype=bool)
        mask[rng.choice(self.routes, count, replace=False)] = True
        return mask

    @property
    def rows_per_block(self) -> int:
        return self.routes * self.rows_per_route

    def drifted_routes(self) -> set[int]:
        """The routes with roadworks: round(roadworks_fraction * routes) of them."""
        return {int(r) for r in np.flatnonzero(self._drifted)}

    def phase_of(self, block: int) -> Phase:
        if block < self.roadworks_at:
            return "before"
        return "roadworks" if block < self.weather_at else "weather"

    def first_row(self, block: int) -> int:
        """The stream's number of block `block`'s first row (its first drifted row, for
        `roadworks_at` and `weather_at`)."""
        return block * self.rows_per_block

    def rows(self, block: int) -> pd.DataFrame:
        """Block `block`: `rows_per_route` rows of every route in a seeded order, indexed by
        their row numbers in the stream; columns COLUMNS."""
        if block < 0:
            raise ValueError(f"blocks are numbered from 0, not {block}")
        rng = np.random.default_rng((self.seed, _BLOCK, block))
        route = rng.permutation(np.repeat(np.arange(self.routes), self.rows_per_route))
        frame = self._generate(route, self.phase_of(block), rng)
        frame.index = pd.RangeIndex(self.first_row(block), self.first_row(block + 1))
        return frame

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[pd.DataFrame]:
        """rows(start), rows(start + 1) ... up to `stop` (excluded; None: forever)."""
        block = start
        while stop is None or block < stop:
            yield self.rows(block)
            block += 1

    def pool(self, route: int, phase: Phase, rows: int, draw: int = 0) -> pd.DataFrame:
        """`rows` rows of one route in `phase`, independent of every block and of other draws:
        never sent, for fitting and scoring references. Indexed from 0."""
        if not 0 <= route < self.routes:
            raise ValueError(f"route {route} is not one of the stream's 0 .. {self.routes - 1}")
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}: use one of {list(PHASES)}")
        if rows < 1:
            raise ValueError(f"a pool needs at least one row, not {rows}")
        rng = np.random.default_rng((self.seed, _POOL, PHASES.index(phase), draw, route))
        return self._generate(np.full(rows, route, dtype=np.int64), phase, rng)

    def expected_delay(self, frame: pd.DataFrame, phase: Phase) -> np.ndarray:
        """The mean delay (noise-free) of rows with `frame`'s route and features in `phase`."""
        p = self.params
        route = frame[PARTITION].to_numpy(dtype=np.int64)
        stop = frame["stop_seq"].to_numpy(dtype=np.float64)
        hour = frame["hour"].to_numpy(dtype=np.float64)
        traffic = frame["traffic"].to_numpy(dtype=np.float64)
        rain = frame[WEATHER].to_numpy(dtype=np.float64)
        weekend = frame["day_of_week"].to_numpy() >= 5
        congested = (stop >= p.bottleneck[route]) & (stop < p.bottleneck_end[route])
        delay = (
            p.base[route]
            + p.per_stop[route] * stop
            + (p.traffic[route] + congested * p.per_bottleneck[route]) * traffic
            + p.morning_delay[route] * _peak(hour, p.morning[route], 1.2)
            + p.evening_delay[route] * _peak(hour, p.evening[route], 1.5)
            + p.weekend[route] * weekend
            + p.rain[route] * rain * (1.0 + rain / RAIN_KNEE_MM)
            + p.per_headway[route] * frame["headway_s"].to_numpy(dtype=np.float64) / 600.0
        )
        if phase != "before":
            works = self._drifted[route] & (stop >= p.works_stop[route])
            delay = delay + works * p.works[route] * (1.0 + 2.0 * traffic)
        return np.asarray(delay, dtype=np.float64)

    def _rush(self, route: np.ndarray, hour: np.ndarray) -> np.ndarray:
        """How much of a rush hour `hour` is on `route`, 0 .. ~1: its own morning and (wider)
        evening peaks."""
        p = self.params
        morning = _peak(hour, p.morning[route], 1.2)
        return np.maximum(morning, _peak(hour, p.evening[route], 1.5))

    def _generate(self, route: np.ndarray, phase: Phase, rng: np.random.Generator) -> pd.DataFrame:
        p, n = self.params, len(route)
        hour = rng.uniform(*HOURS, n)
        rush = self._rush(route, hour)
        weather = STORMY if phase == "weather" else DRY
        wet = rng.random(n) < weather.wet
        rain = np.where(wet, rng.gamma(weather.shape, weather.scale, n), 0.0)
        traffic = p.congestion[route] + 0.6 * rush + rng.normal(0.0, 0.15, n)
        frame = pd.DataFrame(
            {
                PARTITION: route,
                "stop_seq": np.floor(rng.random(n) * p.stops[route]).astype(np.int64),
                "hour": hour,
                "day_of_week": rng.integers(0, 7, n),
                "headway_s": np.where(rush > 0.5, p.headway[route] // 2, p.headway[route]),
                WEATHER: rain,
                "traffic": np.maximum(traffic, 0.0),
            }
        )
        noise = rng.normal(0.0, 1.0, n) * p.noise[route]
        frame[TARGET] = self.expected_delay(frame, phase) + noise
        return frame


def _peak(hour: np.ndarray, centre: np.ndarray, width: float) -> np.ndarray:
    return np.asarray(np.exp(-0.5 * ((hour - centre) / width) ** 2), dtype=np.float64)


def fit_per_route(
    frame: pd.DataFrame, fit: Fit, features: Iterable[str] = FEATURES
) -> dict[int, Regressor]:
    """One model per route of `frame`, fitted on that route's rows (one native thread per fit:
    small fits and predictions only lose time to OpenMP threads on a busy machine)."""
    columns = list(features)
    with threadpool_limits(1):
        return {
            int(route): fit(rows[columns], rows[TARGET].to_numpy())
            for route, rows in _by_route(frame)
        }


def mae_per_route(
    models: Mapping[int, Regressor], frame: pd.DataFrame, features: Iterable[str] = FEATURES
) -> dict[int, float]:
    """Mean absolute error of each route's model on that route's rows of `frame` (routes of
    `frame` without a model are left out)."""
    columns = list(features)
    with threadpool_limits(1):
        return {
            route: float(np.abs(models[route].predict(rows[columns]) - rows[TARGET]).mean())
            for route, rows in _by_route(frame)
            if route in models
        }


def reference_mae(
    stream: FleetStream,
    test: pd.DataFrame,
    phase: Phase,
    fit: Fit | None = None,
    train_rows: int = 1600,
    features: Iterable[str] = FEATURES,
) -> dict[int, float]:
    """The recovery target: for each route of `test` (rows of `phase`, e.g. the live rows after a
    redeploy), the MAE on them of a model fitted on `train_rows` rows of an independent draw of
    that route in `phase` (`stream.pool`). `fit` should build what training fits with the bench's
    spec, and `train_rows` be the rows its window fits on (1600: the default window of 2000 rows
    less its 20% holdout); the default fit is scikit-learn's HistGradientBoostingRegressor
    (random_state 0)."""
    routes = np.unique(test[PARTITION].to_numpy())
    pools = pd.concat([stream.pool(int(route), phase, train_rows) for route in routes])
    models = fit_per_route(pools, fit or _gradient_boosting, features)
    return mae_per_route(models, test, features)


def _by_route(frame: pd.DataFrame) -> Iterator[tuple[int, pd.DataFrame]]:
    for route, rows in frame.groupby(PARTITION, sort=True):
        yield int(route), rows


def _gradient_boosting(features: pd.DataFrame, target: np.ndarray) -> Regressor:
    from sklearn.ensemble import HistGradientBoostingRegressor

    model: Regressor = HistGradientBoostingRegressor(random_state=0).fit(features, target)
    return model
