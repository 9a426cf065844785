"""The error-rate change detectors of the live performance bank: Bernoulli CUSUMs against the
reference error rate and river's ADWIN on the live 0/1 error stream (the GLR is in
sequential.py). Pure: numpy, math, river."""

from __future__ import annotations

import math

import numpy as np


class ErrorRateCusum:
    """Page's CUSUM of the log-likelihood ratio of per-row errors: Bernoulli(p1) vs Bernoulli(p0).

    The threshold h is set from the in-control average run length arl0 (labelled rows between
    false alarms) with Siegmund's approximation for a CUSUM of log-likelihood ratios,
    ARL0 = (e**h - h - 1) / |mu0| with mu0 = E_p0[step] = -KL(p0 || p1) (Wald's root theta is 1
    for likelihood ratios). So the false-alarm rate is fixed over an unbounded stream, not per
    test. p1 = p0 + shift is the error rate it is tuned to catch fastest; larger increases are
    caught faster still (delay ~ h / KL(p || p0)).
    """

    def __init__(self, p0: float, shift: float, arl0: float) -> None:
        self.p0 = min(max(p0, 1e-4), 0.98)
        self.p1 = min(self.p0 + shift, 0.99)
        self._w_error = math.log(self.p1 / self.p0)
        self._w_correct = math.log((1.0 - self.p1) / (1.0 - self.p0))
        drift = -(self.p0 * self._w_error + (1.0 - self.p0) * self._w_correct)
        target = arl0 * drift
        h = math.log(target + 1.0)
        for _ in range(20):  # fixed point of e**h = target + h + 1; converges in a few steps
            h = math.log(target + h + 1.0)
        self.threshold = max(h, 1.0)
        self.statistic = 0.0
        self.alarm_statistic = 0.0
        """The statistic at the latest crossing (the evidence; the live one restarts at 0)."""

    @property
    def weights(self) -> tuple[float, float]:
        """The step of an error and of a correct row (log-likelihood ratios of p1 vs p0)."""
        return self._w_error, self._w_correct

    def update(self, errors: np.ndarray) -> int | None:
        """Feed errors (bool per labelled row, in order); index of the first crossing or None.

        Vectorised recursion S_t = max(0, S_{t-1} + x_t): with C = S_0 + cumsum(x),
        S_t = C_t - min(0, min_{s<=t} C_s). After a crossing the statistic restarts at 0.
        """
        if len(errors) == 0:
            return None
        steps = np.where(errors, self._w_error, self._w_correct)
        running = self.statistic + np.cumsum(steps)
        path = running - np.minimum(np.minimum.accumulate(running), 0.0)
        crossed = np.flatnonzero(path >= self.threshold)
        if len(crossed):
            self.alarm_statistic = float(path[crossed[0]])
            self.statistic = 0.0
            return int(crossed[0])
        self.statistic = float(path[-1])
        return None


class CusumBank:
    """CUSUMs tuned to a small, the given and a large error-rate shift, each at k * arl0 so the
    bank's false-alarm rate stays 1 / arl0 (the rates add); an alarm restarts all of them.
    Small shifts are caught that one CUSUM tuned to `shift` would miss, large ones sooner."""

    FACTORS = (0.5, 1.0, 2.5)

    def __init__(self, p0: float, shift: float, arl0: float) -> None:
        k = len(self.FACTORS)
        self.members = [ErrorRateCusum(p0, shift * f, arl0 * k) for f in self.FACTORS]

    def update(self, errors: np.ndarray) -> int | None:
        crossings = [c.update(errors) for c in self.members]
        hits = [c for c in crossings if c is not None]
        if not hits:
            return None
        for member in self.members:
            member.statistic = 0.0
        return min(hits)

    def strongest(self) -> ErrorRateCusum:
        """The member closest to (or furthest past, at its last alarm) its threshold."""
        return max(self.members, key=lambda c: max(c.statistic, c.alarm_statistic) / c.threshold)


class ErrorRateAdwin:
    """river's ADWIN on the live 0/1 error stream, alarming on increases only.

    ADWIN keeps the longest recent window whose two halves (at any cut) have error rates within
    a Hoeffding-style bound set by `delta`, and drops the older part when they differ. A cut
    where the kept (recent) rows err more often than the dropped ones is an error-rate increase;
    a decrease is not a reason to retrain and only moves the window on. Unlike the CUSUMs it
    needs no reference error rate, and it is the fastest detector of moderate increases in the
    bench's concept streams. `delta` bounds false cuts per check, not per stream: the bench
    measures its false alarms over long stationary streams (zero at the default 0.002).
    """

    def __init__(self, delta: float) -> None:
        from river import drift

        self.delta = delta
        self._detector = drift.ADWIN(delta=delta)
        self.alarm_recent: float | None = None
        """At the latest alarm: error rate of the rows ADWIN kept (the recent part)."""
        self.alarm_older: float | None = None
        """At the latest alarm: error rate of the rows it dropped (the older part)."""

    @property
    def estimate(self) -> float:
        """Error rate over ADWIN's current window."""
        return float(self._detector.estimation)

    def update(self, errors: np.ndarray) -> int | None:
        """Feed errors in order (all of them); index of the first increase found, or None."""
        detector = self._detector
        first: int | None = None
        for i, error in enumerate(errors.tolist()):
            width, mean = detector.width, detector.estimation
            detector.update(float(error))
            if not detector.drift_detected:
                continue
            kept, recent = detector.width, detector.estimation
            dropped = width + 1 - kept
            if dropped <= 0:
                continue
            older = (mean * width + error - recent * kept) / dropped
            if recent > older and first is None:
                first = i
                self.alarm_recent, self.alarm_older = float(recent), float(older)
        return first
