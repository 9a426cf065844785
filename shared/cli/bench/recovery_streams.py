"""Streams of `driftloop bench recovery`: seeded labelled streams from river's synthetic generators
(SEA, Hyperplane, ConceptDriftStream) and one Gaussian concept of our own, each with at most one
known drift, and the offline check that each drift is as big as its kind says.

Kinds: moderate concept drifts, `abrupt`, `gradual` and `incremental` (the pre-drift model's error
rises by 3 to 8 points); `harmless` covariate-only shifts (its error moves by at most 1 point);
`stationary` streams. A stream is one sequence of one generator, cut in order into a pool of
pre-drift rows (calibration), the rows version 1 trains on, the live rows (prediction traffic),
and a pool of post-drift rows generated after them (calibration, and the reference model's
training rows: an independent draw of the new regime, so it can be scored on the live rows).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from driftloop.shared.cli.bench.recovery_metrics import fit_reference, training_rows

KINDS = ("abrupt", "gradual", "incremental", "harmless", "stationary")
MODERATE_KINDS = ("abrupt", "gradual", "incremental")
MODERATE = (0.03, 0.08)
"""Rise of the pre-drift model's error rate a moderate drift must show (calibration check)."""
MODERATE_TARGET = 0.055
"""Rise the Hyperplane drifts are solved for (the middle of MODERATE)."""
HARMLESS = 0.01
"""Largest change of the pre-drift model's error rate a harmless shift (or no drift) may show."""
SEED_TRIES = 10
TARGET = "label"
NOISE = 0.1
"""Share of labels flipped in every stream: the error floor is ~0.10, as in the issue's 11%."""
GAUSS_WEIGHTS = np.array([1.0, -0.8, 0.6, 0.0])
GAUSS_ALONG = np.array([0.8, 1.0, 0.0, 0.0]) / np.hypot(0.8, 1.0)
"""A direction parallel to the Gaussian concept's boundary (GAUSS_WEIGHTS . GAUSS_ALONG = 0)."""

Row = tuple[dict[Any, float], Any]


@dataclass(frozen=True)
class Shape:
    """Lengths of a stream's parts, in rows."""

    train_rows: int = 2000
    live_rows: int = 8000
    drift_row: int = 2000
    """First drifted live row (the middle of the transition for gradual drifts is later)."""
    transition_rows: int = 1000
    """Gradual and incremental drifts take this many rows to settle."""
    pool_rows: int = 12_000


@dataclass(frozen=True)
class Calibration:
    """The pre-drift model (fit like version 1) on independent rows of each regime."""

    error_before: float
    error_after: float
    reference_error: float
    """A model fit on post-drift rows (the spec's training window), on other post-drift rows."""
    ok: bool
    magnitude: float | None = None
    """The drift size solved for (Hyperplane weight change), when the stream has one."""

    @property
    def rise(self) -> float:
        return self.error_after - self.error_before


@dataclass(frozen=True)
class Stream:
    name: str
    kind: str
    source: str
    """What generates it, in words (river's class and arguments)."""
    features: tuple[str, ...]
    train: pd.DataFrame
    live: pd.DataFrame
    before: pd.DataFrame
    """Pre-drift rows generated before `train` (never sent)."""
    after: pd.DataFrame
    """Post-drift rows generated after `live` (never sent)."""
    drift_start: int | None
    """First live row of the transition (None: stationary)."""
    drift_at: int | None
    """Live row an episode's rows and seconds are counted from: the middle of a gradual or
    incremental transition (river's ConceptDriftStream `position`), else drift_start."""
    drift_end: int | None
    """First live row of the settled new regime."""
    seed: int = 0
    calibration: Calibration | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    source: str
    build: Callable[[int, int, int, float], Iterator[Row]]
    """(seed, first drifted row, transition rows, magnitude) -> rows."""
    solve: bool = False
    """Solve the magnitude for a MODERATE_TARGET rise of the pre-drift model's error."""


def _sea(
    before: int, after: int | None = None, gradual: bool = False
) -> Callable[..., Iterator[Row]]:
    def build(seed: int, at: int, transition: int, _: float) -> Iterator[Row]:
        from river.datasets import synth

        first = synth.SEA(variant=before, noise=NOISE, seed=seed)
        if after is None:
            return iter(first)
        second = synth.SEA(variant=after, noise=NOISE, seed=seed + 1)
        if gradual:  # river's sample_idx counts from 1; the middle sits half the transition in
            width = transition // 2
            position = at + transition // 2 + 1
            mixed = synth.ConceptDriftStream(first, second, position, width, seed=seed + 2)
            return iter(mixed)
        return itertools.chain(itertools.islice(iter(first), at), iter(second))

    return build


def _hyperplane(abrupt: bool, drift: bool = True) -> Callable[..., Iterator[Row]]:
    """Five uniform features, two whose weights move by `magnitude` in all: at once (abrupt) or
    in equal steps over the transition (incremental, river's mag_change with sigma 0)."""

    def build(seed: int, at: int, transition: int, magnitude: float) -> Iterator[Row]:
        from river.datasets import synth

        plane = synth.Hyperplane(
            seed=seed, n_features=5, n_drift_features=2, noise_percentage=NOISE + 0.01, sigma=0.0
        )
        steps = 1 if abrupt else transition
        rows = iter(plane)
        for i in itertools.count():
            # why at - 1: river moves the weights after yielding a row, so row `at` is the first
            # one drawn with moved weights
            moving = drift and at - 1 <= i < at - 1 + steps
            plane.mag_change = magnitude / steps if moving else 0.0
            yield next(rows)

    return build


def _gaussian(seed: int, at: int, _: int, shift: float) -> Iterator[Row]:
    """x ~ N(0, I4), y = [w.x > 0] (10% flipped); from `at` on x moves `shift` sd along the
    boundary, so P(y|x) and the distribution of w.x stay as they were."""
    rng = np.random.default_rng(seed)
    for i in itertools.count():
        x = rng.standard_normal(len(GAUSS_WEIGHTS))
        if i >= at:
            x = x + shift * GAUSS_ALONG
        y = bool(x @ GAUSS_WEIGHTS > 0) ^ bool(rng.random() < NOISE)
        yield dict(enumerate(x.tolist())), y


def _shifted(
    build: Callable[..., Iterator[Row]], moves: dict[int, float]
) -> Callable[..., Iterator[Row]]:
    """`build` with features moved by `moves` (feature -> offset) from the drifted row on."""

    def shifted(seed: int, at: int, transition: int, magnitude: float) -> Iterator[Row]:
        for i, (x, y) in enumerate(build(seed, at, transition, magnitude)):
            if i >= at:
                x = {k: v + moves.get(k, 0.0) for k, v in x.items()}
            yield x, y

    return shifted


RECIPES = (
    Recipe("sea-abrupt-9to8", "abrupt", "river SEA noise 0.1, variant 1 -> 0", _sea(1, 0)),
    Recipe("sea-abrupt-7to8", "abrupt", "river SEA noise 0.1, variant 2 -> 0", _sea(2, 0)),
    Recipe("sea-abrupt-8to9", "abrupt", "river SEA noise 0.1, variant 0 -> 1", _sea(0, 1)),
    Recipe(
        "hyperplane-abrupt",
        "abrupt",
        "river Hyperplane 5 features, 2 weights jump",
        _hyperplane(abrupt=True),
        solve=True,
    ),
    Recipe(
        "sea-gradual",
        "gradual",
        "river ConceptDriftStream of SEA variant 1 -> 0",
        _sea(1, 0, gradual=True),
    ),
    Recipe(
        "hyperplane-incremental",
        "incremental",
        "river Hyperplane 5 features, 2 weights glide (mag_change)",
        _hyperplane(abrupt=False),
        solve=True,
    ),
    Recipe(
        "sea-harmless-boundary",
        "harmless",
        "river SEA variant 1, x0 +2 and x1 -2 (along the boundary)",
        _shifted(_sea(1), {0: 2.0, 1: -2.0}),
    ),
    Recipe(
        "sea-harmless-irrelevant",
        "harmless",
        "river SEA variant 1, irrelevant x2 +5",
        _shifted(_sea(1), {2: 5.0}),
    ),
    Recipe(
        "gauss-harmless-boundary",
        "harmless",
        "own Gaussian concept, x moves 1 sd along the boundary",
        lambda seed, at, transition, _: _gaussian(seed, at, transition, 1.0),
    ),
    Recipe("sea-stationary", "stationary", "river SEA variant 1", _sea(1)),
    Recipe(
        "hyperplane-stationary",
        "stationary",
        "river Hyperplane 5 features",
        _hyperplane(abrupt=True, drift=False),
    ),
)
QUICK_RECIPES = ("sea-abrupt-9to8", "sea-harmless-boundary", "sea-stationary")


def streams(names: tuple[str, ...], shape: Shape, seed: int, spec: Any) -> list[Stream]:
    """The named streams, each calibrated against a model fit like version 1 with `spec`: the
    first of SEED_TRIES seeds whose drift passes the check (the last one tried otherwise)."""
    by_name = {r.name: r for r in RECIPES}
    found = []
    for i, name in enumerate(names):
        base = (seed * len(RECIPES) + i) * SEED_TRIES
        for attempt in range(SEED_TRIES):
            stream = _calibrated(by_name[name], shape, base + attempt, spec)
            if stream.calibration is not None and stream.calibration.ok:
                break
        found.append(stream)
    return found


def _calibrated(recipe: Recipe, shape: Shape, seed: int, spec: Any) -> Stream:
    if not recipe.solve:
        stream = make(recipe, shape, seed, 0.0)
        return replace(stream, calibration=calibrate(stream, spec))
    low, high = 0.0, 2.0
    best: tuple[float, Stream] | None = None
    for _ in range(12):  # bisection: the rise grows with the weight change
        middle = (low + high) / 2
        stream = make(recipe, shape, seed, middle)
        found = calibrate(stream, spec, middle)
        miss = abs(found.rise - MODERATE_TARGET)
        if best is None or miss < best[0]:
            best = (miss, replace(stream, calibration=found))
        if miss < 0.004:
            break
        low, high = (middle, high) if found.rise < MODERATE_TARGET else (low, middle)
    assert best is not None
    return best[1]


def make(recipe: Recipe, shape: Shape, seed: int, magnitude: float) -> Stream:
    """One stream: `recipe`'s generator cut into before-pool, train, live and after-pool."""
    pool, train, live = shape.pool_rows, shape.train_rows, shape.live_rows
    drifts = recipe.kind != "stationary"
    at = pool + train + shape.drift_row
    rows = itertools.islice(
        recipe.build(seed, at if drifts else 10**12, shape.transition_rows, magnitude),
        2 * pool + train + live,
    )
    frame = _frame(list(rows))
    start = train + pool
    gliding = recipe.kind in ("gradual", "incremental")
    half = shape.transition_rows // 2 if gliding else 0
    end = shape.transition_rows if gliding else 0
    return Stream(
        name=recipe.name,
        kind=recipe.kind,
        source=recipe.source,
        features=tuple(c for c in frame.columns if c != TARGET),
        before=frame.iloc[:pool].reset_index(drop=True),
        train=frame.iloc[pool:start].reset_index(drop=True),
        live=frame.iloc[start : start + live].reset_index(drop=True),
        after=frame.iloc[start + live :].reset_index(drop=True),
        drift_start=shape.drift_row if drifts else None,
        drift_at=shape.drift_row + half if drifts else None,
        drift_end=shape.drift_row + end if drifts else None,
        seed=seed,
    )


def _frame(rows: list[Row]) -> pd.DataFrame:
    width = len(rows[0][0])
    values = np.array([[x[i] for i in range(width)] for x, _ in rows], dtype=np.float64)
    frame = pd.DataFrame(values, columns=[f"x{i}" for i in range(width)])
    frame[TARGET] = np.where([bool(y) for _, y in rows], "1", "0")
    return frame


def calibrate(stream: Stream, spec: Any, magnitude: float | None = None) -> Calibration:
    """Fit like version 1 (the older part of the training rows, as training holds out the
    newest), then error rates on the pre- and post-drift pools, and a reference fit on the
    first post-drift pool rows (the spec's training window) scored on the rest."""
    features = list(stream.features)
    fit_rows = training_rows(spec, len(stream.train))
    model = fit_reference(stream.train.iloc[:fit_rows], features, spec)
    fit_after = training_rows(spec)
    reference = fit_reference(stream.after.iloc[:fit_after], features, spec)
    before = _error(model, stream.before, features)
    after = _error(model, stream.after, features)
    reference_error = _error(reference, stream.after.iloc[fit_after:], features)
    rise = after - before
    if stream.kind in MODERATE_KINDS:
        ok = MODERATE[0] <= rise <= MODERATE[1]
    else:
        ok = abs(rise) <= HARMLESS
    return Calibration(before, after, reference_error, ok, magnitude)


def _error(model: Any, frame: pd.DataFrame, features: list[str]) -> float:
    predicted = np.asarray(model.predict(frame[features])).astype(str)
    return float((predicted != frame[TARGET].to_numpy()).mean())
