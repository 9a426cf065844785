"""Calibration by simulation of the error-rate GLR's threshold: in-control average run length
(labelled rows between false alarms) as a function of the threshold, under no change.

Pure numpy, no I/O; `python -m driftloop.services.monitoring.core.calibration` prints the table
behind sequential.CALIBRATED_THRESHOLD. The streams are i.i.d. Bernoulli errors (seeds from
1000 on), unrelated to the benchmark's streams: nothing here is fitted to `bench drift`.
Each deployment draws a fresh holdout (the GLR's prior) and a fresh live stream at the same
rate; an alarm is an up-crossing of the threshold by the never-restarting statistic at least
`min_pre` rows after it was last at or above it (the restarted detector needs min_pre rows
before it can fire again).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from driftloop.services.monitoring.core.sequential import ErrorRateGlr

RATES = (0.01, 0.03, 0.1, 0.2, 0.3, 0.45)
"""Error rates the threshold must hold for (the worst of them sets it)."""
THRESHOLDS = tuple(np.round(np.arange(11.0, 18.01, 0.25), 2))


@dataclass(frozen=True)
class NullRun:
    """Up-crossings of each threshold over `rows` in-control rows at one error rate."""

    rate: float
    rows: int
    alarms: dict[float, int]

    def arl(self, threshold: float) -> float:
        """Rows per alarm (a lower bound of rows / 1 when none was seen)."""
        return self.rows / max(1, self.alarms[threshold])


def null_run(
    rate: float,
    *,
    deployments: int,
    deployment_rows: int,
    holdout_rows: int = 1000,
    seed: int = 1000,
    thresholds: tuple[float, ...] = THRESHOLDS,
    min_post: int = 25,
) -> NullRun:
    """Simulate `deployments` in-control deployments at `rate`; count up-crossings."""
    rng = np.random.default_rng(seed)
    alarms = dict.fromkeys(thresholds, 0)
    for _ in range(deployments):
        holdout = int((rng.random(holdout_rows) < rate).sum())
        glr = ErrorRateGlr(
            1e7,
            prior_rows=holdout_rows,
            prior_errors=float(holdout),
            threshold=math.inf,
            min_post=min_post,
        )
        path = glr.path(rng.random(deployment_rows) < rate)
        for h in thresholds:
            alarms[h] += _alarms(path >= h, glr.min_pre)
    return NullRun(rate, deployments * deployment_rows, alarms)


def _alarms(above: np.ndarray, dead_rows: int) -> int:
    """Up-crossings at least dead_rows rows after the previous row above the threshold."""
    rows = np.flatnonzero(above)
    if len(rows) == 0:
        return 0
    return 1 + int(np.count_nonzero(np.diff(rows) > dead_rows))


def fitted_slope(runs: list[NullRun], min_alarms: int = 20) -> float:
    """Least-squares slope of ln(ARL) against the threshold, over thresholds where every rate
    saw at least `min_alarms` alarms (the worst rate's ARL at each)."""
    hs = [h for h in THRESHOLDS if all(r.alarms[h] >= min_alarms for r in runs)]
    if len(hs) < 2:
        return math.nan
    worst = [math.log(min(r.arl(h) for r in runs)) for h in hs]
    return float(np.polyfit(hs, worst, 1)[0])


def main() -> None:
    min_post = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    runs = [
        null_run(rate, deployments=20, deployment_rows=200_000, seed=1000 + i, min_post=min_post)
        for i, rate in enumerate(RATES)
    ]
    header = "threshold " + " ".join(f"{r.rate:>9}" for r in runs) + "  (ARL, rows per alarm)"
    lines = [header]
    for h in THRESHOLDS:
        cells = " ".join(
            f"{r.arl(h):9.3g}" if r.alarms[h] else f"{'>' + format(r.rows, '.2g'):>9}" for r in runs
        )
        lines.append(f"{h:9.2f} {cells}")
    lines.append(f"fitted slope of ln(ARL) vs threshold (worst rate): {fitted_slope(runs):.2f}")
    print("\n".join(lines))  # noqa: T201 - a calibration report for a human


if __name__ == "__main__":
    main()
