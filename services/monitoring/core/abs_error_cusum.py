"""The absolute-error CUSUMs of a regressor's live performance bank: Page's one-sided CUSUM on
absolute errors standardised by the reference's MAE and sd(|error|), its threshold set for an
in-control average run length. Pure: numpy, scipy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special, stats

CAP = 4.0
"""Standardised absolute errors above this count as this much: one absurd label (a typo of
1e9) moves the CUSUM by at most CAP - k, and a heavy right tail cannot make it cry wolf. At 8,
log-normal absolute errors alarmed twice as often as the threshold promised (measured with
`tilt`'s simulation, see threshold()); at 4 no error law we tried did."""
GRID = 20_000
"""Quantiles of the assumed error law used to solve for the tilt."""
OVERSHOOT = 1.166
"""Siegmund's correction of the boundary for the overshoot of a unit-variance random walk
(2 x 0.583): the threshold crossed is effectively h + OVERSHOOT."""
SHAPES = (0.5, 100.0)
"""Bounds of the assumed Gamma shape (MAE / sd(|error|))^2."""
MIN_K = 0.05
"""Smallest reference value k (in sds): at 0 an in-control CUSUM has no negative drift (a
reference MAE of 0 asks for a rise of 0 sds)."""
MAX_K = 2.0
"""Largest reference value k (in sds): beyond it the tilt has no root within the grid (a model
whose absolute errors hardly vary asks for rises of many sds; 2 is sensitive enough)."""


def gamma_shape(mae: float, sd: float) -> float:
    """The Gamma shape with this mean and sd (method of moments), within SHAPES: 1 for
    exponential absolute errors (Laplace errors), about 1.75 for half-normal ones."""
    if sd <= 0:
        return SHAPES[1]
    return min(max((mae / sd) ** 2, SHAPES[0]), SHAPES[1])


def tilt(shape: float, k: float) -> tuple[float, float]:
    """(theta, mean step): the root theta > 0 of E[exp(theta (Z - k))] = 1 for Z a standardised
    Gamma(shape), and E[Z - k] = -k. Wald's exponential tilt: a CUSUM of such steps exceeds h
    before returning to 0 with probability about exp(-theta h).

    Why the unclipped law although the steps are clipped at CAP: its heavier right tail gives a
    smaller theta, so a higher, conservative threshold. With the clipped law instead, half-normal
    absolute errors (lighter-tailed than the fitted Gamma) alarmed 1.5 times too often."""
    q = (np.arange(GRID) + 0.5) / GRID
    z = (stats.gamma.ppf(q, shape) - shape) / math.sqrt(shape) - k

    def excess(theta: float) -> float:
        return float(special.logsumexp(theta * z)) - math.log(GRID)

    hi = 1.0
    while excess(hi) <= 0:  # z's top quantile exceeds k (MAX_K), so this ends
        hi *= 2.0
    return float(optimize.brentq(excess, 1e-9, hi, xtol=1e-12)), -k


def threshold(theta: float, mean_step: float, arl0: float) -> float:
    """h with an in-control average run length of about arl0 rows: Siegmund's approximation
    ARL0 = (e^(theta b) - theta b - 1) / (theta |mean step|), b = h + OVERSHOOT.

    Measured (4-8M simulated rows per law, target ARL 2e5, k = 0.066, 0.13, 0.33): half-normal
    2.2e5 .. 8.9e5, exponential 5.3e5 .. 1.6e6, |t4|, |t3| and log-normal above 2e6 rows per
    false alarm."""
    target = arl0 * theta * abs(mean_step)
    b = math.log(target + 1.0)
    for _ in range(50):  # fixed point of e**b = target + b + 1; converges in a few steps
        b = math.log(target + b + 1.0)
    return max(b / theta - OVERSHOOT, 1.0)


class AbsErrorCusum:
    """S_t = max(0, S_{t-1} + min(z_t, CAP) - k) on standardised absolute errors z, alarming at
    h (threshold()). k = shift / 2 is tuned to a rise of the mean absolute error by `shift`
    reference sds; larger rises are caught sooner (delay ~ h / (rise - k))."""

    def __init__(self, shift: float, arl0: float, shape: float) -> None:
        self.k = min(max(shift / 2.0, MIN_K), MAX_K)
        self.theta, mean_step = tilt(shape, self.k)
        self.threshold = threshold(self.theta, mean_step, arl0)
        self.statistic = 0.0
        self.alarm_statistic = 0.0
        """The statistic at the latest crossing (the evidence; the live one restarts at 0)."""

    def update(self, z: np.ndarray) -> int | None:
        """Feed standardised absolute errors in order; index of the first crossing or None.

        Vectorised as ErrorRateCusum.update; after a crossing the statistic restarts at 0."""
        if len(z) == 0:
            return None
        running = self.statistic + np.cumsum(np.minimum(z, CAP) - self.k)
        path = running - np.minimum(np.minimum.accumulate(running), 0.0)
        crossed = np.flatnonzero(path >= self.threshold)
        if len(crossed):
            self.alarm_statistic = float(path[crossed[0]])
            self.statistic = 0.0
            return int(crossed[0])
        self.statistic = float(path[-1])
        return None

    def bound(self) -> float:
        """exp(-theta S): Wald's bound on the in-control chance of an excursion this high (the
        evidence's p-value-like figure), at the latest alarm or now."""
        return min(1.0, math.exp(-self.theta * max(self.statistic, self.alarm_statistic)))


class AbsErrorCusumBank:
    """CUSUMs tuned to a half, the given and 2.5 times the given rise of the MAE, each at
    k * arl0 so the bank's false-alarm rate stays 1 / arl0 (as the classifier's CusumBank).

    Absolute errors e are standardised as z = (e - center) / scale: center the reference MAE
    plus `margin` (its estimate's uncertainty), scale the reference sd(|error|). `shift` is in
    those sds."""

    FACTORS = (0.5, 1.0, 2.5)

    def __init__(self, mae: float, sd: float, margin: float, shift: float, arl0: float) -> None:
        self.center = mae + margin
        self.scale = max(sd, 1e-12 * max(1.0, abs(mae)))
        shape = gamma_shape(mae, self.scale)
        k = len(self.FACTORS)
        self.members = [AbsErrorCusum(shift * f, arl0 * k, shape) for f in self.FACTORS]

    def standardise(self, abs_errors: np.ndarray) -> np.ndarray:
        return (abs_errors - self.center) / self.scale

    def update(self, abs_errors: np.ndarray) -> int | None:
        z = self.standardise(abs_errors)
        hits = [i for i in (c.update(z) for c in self.members) if i is not None]
        if not hits:
            return None
        for member in self.members:
            member.statistic = 0.0
        return min(hits)

    def strongest(self) -> AbsErrorCusum:
        """The member closest to (or furthest past, at its last alarm) its threshold."""
        return max(self.members, key=lambda c: max(c.statistic, c.alarm_statistic) / c.threshold)
