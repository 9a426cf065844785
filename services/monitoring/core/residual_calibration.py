"""Measures a regressor's error bank (regression.py) on river's synthetic Friedman streams:
false alarms on stationary ones (river.datasets.synth.Friedman), detection delay on drifting
ones (FriedmanDrift: global recurring abrupt "gra", global slow gradual "gsg", local expanding
abrupt "lea").

A scikit-learn model is fitted on the first rows of a Friedman stream and its holdout MAE and
RMSE become the reference, as training's would; live streams use other seeds.
`python -m driftloop.services.monitoring.core.residual_calibration [seeds] [stationary rows]`
prints the table; the unit tests run small versions of the same functions.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.regression import RegressionReference, RegressionTracker

TRAIN_ROWS, HOLDOUT_ROWS = 4000, 1000
BATCH = 500
"""Labels per batch fed to the tracker (as LabelBatch events would bring them)."""
PRE_ROWS = 5000
"""Stationary rows before a drifting stream's first change."""
POST_ROWS = 20_000
"""Rows after the change within which an alarm counts as a detection (lea: its three stages)."""
LEA_STEP = 20_000
"""Rows between the local expanding drift's three stages (1.6%, 5.4% then 18% of the space)."""


def friedman_rows(dataset: Iterable[tuple[dict[int, float], float]], n: int) -> tuple[Any, Any]:
    """(X, y) of the first n rows of a river stream."""
    x = np.empty((n, 10))
    y = np.empty(n)
    for i, (features, target) in enumerate(itertools.islice(dataset, n)):
        x[i] = list(features.values())
        y[i] = target
    return x, y


def fitted(seed: int = 0) -> tuple[Any, RegressionReference]:
    """A model fitted on a Friedman stream, and its holdout reference."""
    from river.datasets import synth
    from sklearn.ensemble import HistGradientBoostingRegressor

    x, y = friedman_rows(synth.Friedman(seed=seed), TRAIN_ROWS + HOLDOUT_ROWS)
    model = HistGradientBoostingRegressor(max_iter=200, random_state=0)
    model.fit(x[:TRAIN_ROWS], y[:TRAIN_ROWS])
    errors = np.abs(model.predict(x[TRAIN_ROWS:]) - y[TRAIN_ROWS:])
    rmse = float(np.sqrt(np.mean(errors**2)))
    return model, RegressionReference(float(errors.mean()), rmse, HOLDOUT_ROWS, "profile")


def tracker(reference: RegressionReference, policy: DriftPolicy | None = None) -> RegressionTracker:
    p = policy or DriftPolicy()
    return RegressionTracker(
        reference,
        burn_in_rows=p.label_burn_in_rows,
        window_rows=p.label_window_rows,
        mae_shift=p.mae_shift,
        error_arl0=p.error_arl0_rows,
        adwin_delta=p.adwin_delta,
    )


def alarms(bank: RegressionTracker, predicted: Any, truth: Any) -> list[tuple[int, str]]:
    """(row, detector) of every alarm over the stream, fed in BATCH-row label batches."""
    found = []
    for start in range(0, len(truth), BATCH):
        at = bank.observe(
            [str(v) for v in predicted[start : start + BATCH]],
            [str(v) for v in truth[start : start + BATCH]],
        )
        if at is not None:
            found.append((start + at, bank.fired))
    return found


@dataclass(frozen=True)
class Trial:
    stream: str
    seed: int
    rows: int
    alarms: list[tuple[int, str]]
    change: int | None
    """Row of the first change (None: stationary)."""

    @property
    def delay(self) -> int | None:
        """Rows from the change to the first alarm after it (None: none before the end)."""
        if self.change is None:
            return None
        after = [row - self.change for row, _ in self.alarms if row >= self.change]
        return after[0] if after else None

    @property
    def false_alarms(self) -> int:
        end = self.rows if self.change is None else self.change
        return sum(row < end for row, _ in self.alarms)


def stationary(model: Any, reference: RegressionReference, seed: int, rows: int) -> Trial:
    from river.datasets import synth

    x, y = friedman_rows(synth.Friedman(seed=seed), rows)
    return Trial("stationary", seed, rows, alarms(tracker(reference), model.predict(x), y), None)


def drifting(model: Any, reference: RegressionReference, kind: str, seed: int) -> Trial:
    """A FriedmanDrift stream whose first change is at PRE_ROWS."""
    from river.datasets import synth

    far = 10**9
    position: tuple[int, ...] = {
        "gra": (PRE_ROWS, far),
        "gsg": (PRE_ROWS, far),
        "lea": (PRE_ROWS, PRE_ROWS + LEA_STEP, PRE_ROWS + 2 * LEA_STEP),
    }[kind]
    extra = {"transition_window": 2000} if kind == "gsg" else {}
    stream = synth.FriedmanDrift(drift_type=kind, position=position, seed=seed, **extra)
    rows = PRE_ROWS + (3 * LEA_STEP if kind == "lea" else POST_ROWS)
    x, y = friedman_rows(stream, rows)
    found = alarms(tracker(reference), model.predict(x), y)
    return Trial(kind, seed, rows, found, PRE_ROWS)


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    lines = [
        f"each trial: HistGradientBoostingRegressor fitted on {TRAIN_ROWS} Friedman rows (seed "
        f"s), reference = its {HOLDOUT_ROWS}-row holdout; live stream seed 1000 + s",
        f"{'stream':>10} {'trials':>6} {'rows':>9} {'false':>5} {'detected':>8} "
        f"{'median delay':>12} {'max delay':>9}  first detector",
    ]
    trials = []
    for s in range(seeds):
        model, reference = fitted(s)
        trials.append(stationary(model, reference, 1000 + s, rows))
        trials += [drifting(model, reference, kind, 1000 + s) for kind in ("gra", "gsg", "lea")]
    for kind in ("stationary", "gra", "gsg", "lea"):
        group = [t for t in trials if t.stream == kind]
        delays = [t.delay for t in group if t.delay is not None]
        fired = sorted({name for t in group for _, name in t.alarms[:1]})
        median = f"{np.median(delays):.0f}" if delays else "-"
        worst = f"{max(delays)}" if delays else "-"
        detected = "-" if kind == "stationary" else f"{len(delays)}/{len(group)}"
        lines.append(
            f"{kind:>10} {len(group):>6} {sum(t.rows for t in group):>9} "
            f"{sum(t.false_alarms for t in group):>5} {detected:>8} {median:>12} {worst:>9}  "
            f"{', '.join(fired) or '-'}"
        )
    print("\n".join(lines))  # noqa: T201 - a measurement report for a human


if __name__ == "__main__":
    main()
