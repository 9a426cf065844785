"""How far above its estimate the reference error rate of the CUSUM bank is taken.

The CUSUMs (error_detectors.py) compare live errors with a reference rate p0 that is itself an
estimate (e errors in n rows: a holdout, out-of-fold rows, the version's first live labels). A
p0 below the true rate makes a CUSUM drift upwards and cry wolf; one above it makes it slow:
every point of margin is a point of the drift the bank no longer sees. A fixed "two standard
errors" margin paid both ways: in the recovery bench it put p0 1.1 to 2.9 points above the
version's live pre-drift error, so a 5-6 point rise looked like 3-4 and was caught 800-1,000 rows
later than with the true rate (issue #17).

Here the margin is what the false-alarm budget allows, no more: the smallest p0 = p_hat + m SE
whose bank false-alarm rate, averaged over the rates the estimate leaves plausible, is at most
the bank's budget 1 / arl0 (the unconditional rate of false alarms over deployments, which is
what `error_arl0_rows` promises). The plausible rates are the Jeffreys posterior
Beta(e + 1/2, n - e + 1/2); a member's in-control run length at a true rate p is Siegmund's
approximation for a random walk with the member's two log-likelihood steps,
ARL(p) = (exp(theta h) - theta h - 1) / (-theta mu), where mu is the mean step at p and theta != 0
the root of E_p[exp(theta step)] = 1 (theta = 1 at p = p0: the threshold's own formula). The
thresholds stay the nominal ones of `ErrorRateCusum`.

What that buys, at p_hat 0.11 and the default budget (the bank's half of one false alarm per
1e7 labelled rows): a margin of 1.45 SE over 2,000 out-of-fold rows and 1.05 SE once 2,000 live
labels are pooled in, where 2 SE spent about a quarter of the budget; it shrinks as rows grow,
because the risk that matters (a true rate so far above p0 that the small-shift CUSUM drifts
upwards) falls off faster than the standard error. A 1,000-row live burn-in alone gets 2 SE.
Assumed: the measured rows err at the live rate. A profile that is optimistic about live data
(a real bias, not noise) overspends the budget; pooling the version's live labels
(PerformanceTracker) halves that bias's weight.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import stats

from driftloop.services.monitoring.core.error_detectors import CusumBank, ErrorRateCusum

GRID = 400
"""Plausible error rates the false-alarm rate is averaged over."""
TAIL = 1e-10
"""Posterior mass left out at each end of the grid (far below any budget share it could hold)."""
MAX_MARGIN_SE = 8.0
"""Largest margin searched (standard errors); a budget it cannot meet gets this margin."""


def averaged_false_alarms(
    p0: float, shift: float, arl0: float, errors: float, rows: float
) -> float:
    """False alarms per labelled row of a CusumBank(p0, shift, arl0), averaged over the Jeffreys
    posterior of the error rate given `errors` in `rows`."""
    rates, weights = _posterior(errors, rows)
    bank = CusumBank(p0, shift, arl0)
    total = np.zeros_like(rates)
    for member in bank.members:
        total += 1.0 / run_lengths(member, rates)
    return float(weights @ total)


def run_lengths(member: ErrorRateCusum, rates: np.ndarray) -> np.ndarray:
    """Siegmund's in-control average run length of `member` when the true error rate is each
    of `rates` (inf where it is beyond float range)."""
    w_error, w_correct = member.weights
    h = member.threshold
    mu = rates * w_error + (1.0 - rates) * w_correct
    theta = _roots(rates, w_error, w_correct, mu)
    variance = rates * w_error**2 + (1.0 - rates) * w_correct**2 - mu**2
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        arl = (np.expm1(theta * h) - theta * h) / (-theta * mu)
        flat = h * h / np.maximum(variance, 1e-300)  # the limit as mu -> 0 (theta -> 0)
    arl = np.where(np.abs(theta) < 1e-8, flat, arl)
    return np.where(np.isfinite(arl) & (arl > 0), arl, np.inf)


def _roots(rates: np.ndarray, w_error: float, w_correct: float, mu: np.ndarray) -> np.ndarray:
    """The non-zero root theta of p exp(theta w_error) + (1 - p) exp(theta w_correct) = 1 at
    each rate p (positive where the mean step is negative): bisection, vectorised. Clipped at
    |theta| = 60, where exp(theta h) is past any run length that matters."""
    sign = np.where(mu < 0, 1.0, -1.0)
    low, high = np.full_like(rates, 1e-9), np.full_like(rates, 60.0)

    def excess(t: np.ndarray) -> np.ndarray:
        theta = sign * t
        with np.errstate(over="ignore"):
            return rates * np.exp(theta * w_error) + (1.0 - rates) * np.exp(theta * w_correct) - 1

    for _ in range(45):  # 60 / 2**45: far finer than any run length needs
        middle = (low + high) / 2
        above = excess(middle) > 0
        high = np.where(above, middle, high)
        low = np.where(above, low, middle)
    return sign * (low + high) / 2


def _posterior(errors: float, rows: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = errors + 0.5, max(rows - errors, 0.0) + 0.5
    low, high = stats.beta.ppf([TAIL, 1.0 - TAIL], a, b)
    rates = np.linspace(low, high, GRID)
    # each rate carries the posterior mass of its bin (a density at the grid points would
    # over-weight the Jeffreys prior's pole at 0 when no error was seen)
    edges = np.concatenate([[0.0], (rates[1:] + rates[:-1]) / 2, [1.0]])
    return rates, np.diff(stats.beta.cdf(edges, a, b))


def reference_error_rate(errors: float, rows: float, shift: float, arl0: float) -> float:
    """The CUSUM bank's reference error rate for `errors` seen in `rows`: the estimate plus the
    smallest margin (in steps of 0.05 standard errors) whose averaged false-alarm rate is within
    1 / arl0.

    The margin, in standard errors, is computed for the rate rounded to 0.001 and the rows down to
    two significant figures, and cached (it varies slowly with both; a fleet builds a tracker per
    partition, and one search takes 40-140 ms on a busy machine)."""
    rows = max(float(rows), 1.0)
    rate = min(max(float(errors), 0.0), rows) / rows
    se = math.sqrt(max(rate * (1.0 - rate), 1.0 / rows) / rows)
    unit = 10.0 ** (math.floor(math.log10(rows)) - 1)
    fewer = math.floor(rows / unit) * unit  # rounded down: fewer rows ask a wider margin
    steps = _margin_steps(round(rate, 3), fewer, round(shift, 6), float(f"{arl0:.3g}"))
    return rate + steps * 0.05 * se


@functools.lru_cache(maxsize=4096)
def _margin_steps(rate: float, rows: float, shift: float, arl0: float) -> int:
    """The margin in steps of 0.05 standard errors (see reference_error_rate)."""
    errors = rate * rows
    se = math.sqrt(max(rate * (1.0 - rate), 1.0 / rows) / rows)
    budget = 1.0 / arl0

    def within(steps: int) -> bool:
        p0 = rate + steps * 0.05 * se
        return averaged_false_alarms(p0, shift, arl0, errors, rows) <= budget

    low, high = 0, round(MAX_MARGIN_SE / 0.05)
    if within(low):
        return low
    if not within(high):
        return high
    while high - low > 1:  # the averaged rate falls as the margin grows
        middle = (low + high) // 2
        low, high = (low, middle) if within(middle) else (middle, high)
    return high
