"""A sequential two-sample test for an increase of the error rate: the generalized likelihood
ratio (GLR) of "the error rate rose at some recent row" against "it stayed the same", with the
rate before the change estimated from the reference holdout and the live stream itself.

Pure domain logic. Unlike a CUSUM it needs no known reference error rate, so a reference that
is off (a small holdout, live data a bit harder than training's) cannot make it cry wolf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

CALIBRATED_ARL = 1e6
"""In-control average run length (labelled rows between false alarms) at CALIBRATED_THRESHOLD."""
CALIBRATED_THRESHOLD = 14.0
"""The GLR threshold (nats) at which the worst of six error rates (0.01 .. 0.45; it is 0.3) had
an in-control ARL of 1e6 rows in `python -m driftloop.services.monitoring.core.calibration`:
4M rows per rate (20 deployments x 200k rows, each with a fresh 1000-row holdout), seeds
1000-1005, i.i.d. Bernoulli errors unrelated to the benchmark's streams. Alarms are counted
conservatively (every excursion above the threshold, see calibration.py). At 16.0 and above
no alarm was seen in all 24M rows."""
ARL_SLOPE = 0.9
"""d ln(ARL) / d threshold used to extrapolate beyond the calibrated ARL. For a GLR scan the
in-control ARL grows like e^h / h^(3/2) (Siegmund and Venkatraman 1995), a local slope of
1 - 3 / (2h) = 0.9 at h = 15; a smaller slope asks for more threshold (more conservative)."""
SCALE_BONUS = 0.5
"""Weight of the multiscale bonus ln(n2 / min_post) (see ErrorRateGlr): 0 = one flat threshold,
1 = equal false-alarm shares per scale. Chosen between them on concept-drift streams of seeds
1-3 (never the benchmark's seed 0): 1 made long-window flukes as frequent as short bursts."""


def first_alarm(
    alarms: Sequence[tuple[int | None, str]], glr: ErrorRateGlr, glr_name: str, batch_rows: int
) -> tuple[int, str, int] | None:
    """The earliest alarm of a detector bank's batch, as (row index in the batch, detector name,
    rows since the change); None when no detector fired.

    The change is dated by the GLR's best split whichever detector fired: it is the change
    point's maximum-likelihood estimate (ADWIN's kept window reached 400 rows before a known
    change in the unit test); it was taken at the batch's last row unless the GLR alarmed."""
    hits = [(i, name) for i, name in alarms if i is not None]
    if not hits:
        return None
    index, fired = min(hits)
    if fired == glr_name:
        return index, fired, glr.alarm_post
    return index, fired, max(0, glr.best_post - (batch_rows - 1 - index))


def glr_threshold(arl0: float) -> float:
    """The threshold h with an in-control ARL of about arl0 labelled rows (the calibration,
    extrapolated at ARL_SLOPE beyond CALIBRATED_ARL; never below the calibrated threshold)."""
    return CALIBRATED_THRESHOLD + max(0.0, math.log(arl0 / CALIBRATED_ARL)) / ARL_SLOPE


def alarm_rate(statistic: float) -> float:
    """In-control false alarms per labelled row at a threshold equal to `statistic` (1 / ARL,
    from the calibration); the GLR evidence's p-value-like figure."""
    arl = CALIBRATED_ARL * math.exp(ARL_SLOPE * (statistic - CALIBRATED_THRESHOLD))
    return min(1.0, 1.0 / arl)


def post_lengths(min_post: int, ratio: float, max_post: int) -> np.ndarray:
    """Candidate post-change lengths: a geometric grid from min_post to max_post."""
    steps = math.ceil(math.log(max_post / min_post) / math.log(ratio)) + 1
    grid = np.round(min_post * ratio ** np.arange(steps)).astype(np.int64)
    return np.unique(np.minimum(grid, max_post))


class ErrorRateGlr:
    """One-sided Bernoulli GLR over candidate change points, looked at after every labelled row.

    At row t, for every post-change length n2 on a geometric grid (min_post, x ratio, up to
    max_post rows), the rows so far split into a before (n1 rows, e1 errors, plus the prior:
    the profile's held-out rows and errors) and an after (the last n2 rows, e2 errors). Each
    split's log-likelihood ratio of two rates vs one (counted only when the after-rate is the
    higher and n1 >= min_pre) gets a multiscale bonus ln(n2 / min_post); the statistic is the
    max over splits. Why the bonus: under no change, a scan over windows of length ~n looked
    at every row up-crosses a level h at a rate ~ h^(3/2) e^-h / n per row (Siegmund and
    Venkatraman 1995), so short windows, which renew every few rows, cause nearly all false
    alarms at a flat threshold. A threshold of h - ln(n2 / min_post) spends the same share of
    false alarms on every scale (the penalty of Dumbgen and Spokoiny 2001), so long windows can
    catch small increases at a lower level while bursts in short windows need more evidence.

    Error control over repeated looks: the threshold h comes from `glr_threshold(arl0)`,
    calibrated by simulation under no change (see CALIBRATED_THRESHOLD and calibration.py):
    the in-control average run length, in labelled rows, is about arl0 or more at every error
    rate from 0.01 to 0.45 (measured to 1e6, extrapolated beyond). The two-sample statistic is
    nearly pivotal (its null law hardly depends on the rate), which lets one calibration serve
    every model; the worst rate sets h.
    Assumes independent errors (labels of distinct requests).
    """

    CHUNK = 4096
    """Rows evaluated together (bounds memory at CHUNK x splits)."""

    def __init__(
        self,
        arl0: float,
        *,
        min_post: int = 25,
        ratio: float = 1.2,
        max_post: int = 50_000,
        min_pre: int = 200,
        prior_rows: int = 0,
        prior_errors: float = 0.0,
        threshold: float | None = None,
    ) -> None:
        self.min_pre = min_pre
        self._post = post_lengths(min_post, ratio, max_post)
        self._bonus = SCALE_BONUS * np.log(self._post / self._post[0])
        """Multiscale penalty: a split's LLR counts SCALE_BONUS ln(n2 / min_post) more."""
        self.threshold = glr_threshold(arl0) if threshold is None else threshold
        self._prior = (prior_rows, prior_errors)
        self._max_post = int(self._post[-1])
        self._dtype = np.uint16 if self._max_post + self.CHUNK < 2**16 else np.uint32
        self._cum = np.zeros(1, dtype=self._dtype)
        """Cumulative errors at rows first..t (the last max_post + 1 of them), less `_base`:
        small integers, so 2 bytes a row instead of a float's 8 (a fleet runs thousands)."""
        self._base = 0
        """Errors before row `_first` (the cumulative count is _base + _cum)."""
        self._first = 0
        """Row index of self._cum[0]."""
        self._rows = 0
        self.statistic = 0.0
        self.alarm_statistic = 0.0
        self.alarm_post = 0
        """At the latest alarm, the post-change length of the split with the largest statistic:
        the GLR's estimate of how many labelled rows ago the error rate changed (0: none)."""
        self.best_post = 0
        """The same at the latest row, alarm or not (0 while no split shows an increase): when
        another detector alarms, the maximum-likelihood change point given that there is one."""
        self._argmax = np.zeros(0, dtype=np.int64)

    def update(self, errors: np.ndarray) -> int | None:
        """Feed errors (bool per labelled row, in order); index of the first alarm or None.

        After an alarm the test restarts from the rows that follow it.
        """
        for begin in range(0, len(errors), self.CHUNK):
            chunk = errors[begin : begin + self.CHUNK]
            path = self._extend(chunk)
            crossed = np.flatnonzero(path >= self.threshold)
            if len(crossed):
                self.alarm_statistic = float(path[crossed[0]])
                self.alarm_post = self.best_post = int(self._post[self._argmax[crossed[0]]])
                self._restart()
                return begin + int(crossed[0])
            if len(path):
                self.statistic = float(path[-1])
                self.best_post = int(self._post[self._argmax[-1]]) if path[-1] > 0 else 0
        return None

    def path(self, errors: np.ndarray) -> np.ndarray:
        """The statistic after each row of `errors`, never restarting (for calibration)."""
        step = self.CHUNK
        parts = [self._extend(errors[b : b + step]) for b in range(0, len(errors), step)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _extend(self, chunk: np.ndarray) -> np.ndarray:
        """Append a chunk of errors; the statistic at each of its rows."""
        n = len(chunk)
        cum = int(self._cum[-1]) + np.cumsum(chunk, dtype=np.int64)
        self._cum = np.concatenate([self._cum, cum.astype(self._dtype)])
        rows = self._rows + 1 + np.arange(n)
        self._rows += n
        path = self._statistics(rows)
        drop = len(self._cum) - (self._max_post + 1)
        if drop > 0:
            shift = int(self._cum[drop])
            self._cum = (self._cum[drop:].astype(np.int64) - shift).astype(self._dtype)
            self._base += shift
            self._first += drop
        return path

    def _statistics(self, rows: np.ndarray) -> np.ndarray:
        """The statistic at each of `rows` (and, in self._argmax, the best split's column)."""
        prior_rows, prior_errors = self._prior
        split = rows[:, None] - self._post[None, :]  # the last row before the change
        n1 = (split + prior_rows).astype(float)
        valid = (split >= 0) & (n1 >= self.min_pre)
        if not valid.any():
            self._argmax = np.zeros(len(rows), dtype=np.int64)
            return np.zeros(len(rows))
        before = self._base + self._cum[np.maximum(split, self._first) - self._first].astype(float)
        now = self._base + self._cum[rows - self._first][:, None].astype(float)
        n2 = np.broadcast_to(self._post.astype(float), n1.shape)
        e1 = before + prior_errors
        e2 = now - before
        n1 = np.maximum(n1, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            llr = _llr(e1, n1) + _llr(e2, n2) - _llr(e1 + e2, n1 + n2)
        llr = np.where(valid & (e2 * n1 > e1 * n2), llr + self._bonus, 0.0)
        self._argmax = np.asarray(llr.argmax(axis=1))
        return np.asarray(llr.max(axis=1))

    def _restart(self) -> None:
        self._cum = np.zeros(1, dtype=self._dtype)
        self._first = self._rows = self._base = 0
        self.statistic = 0.0
        self._prior = (0, 0.0)  # after a change the old reference no longer describes the rows


def _llr(errors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Maximised Bernoulli log-likelihood of `errors` in `rows` (0 log 0 = 0)."""
    correct = rows - errors
    return special.xlogy(errors, errors / rows) + special.xlogy(correct, correct / rows)
