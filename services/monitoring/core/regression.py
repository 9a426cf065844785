"""Live performance of a regressor from delayed labels, on residuals: MAE and RMSE windows
against the reference holdout's, a bank of change detectors on the absolute-error stream
(CUSUMs against the reference: abs_error_cusum.py; the live-stream GLR and river's ADWIN on
the share of errors above the reference MAE: sequential.py, error_detectors.py) and a KS test
of the labels against the training target.

Pure domain logic; the monitor feeds it joined predictions and labels (numbers as text).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd
from scipy import stats

from driftloop.services.monitoring.core.abs_error_cusum import AbsErrorCusumBank
from driftloop.services.monitoring.core.drift import DriftPolicy, FeatureDrift, ks_test
from driftloop.services.monitoring.core.error_detectors import ErrorRateAdwin
from driftloop.services.monitoring.core.performance import (
    LABEL,
    PerformanceTracker,
    profile_reference,
)
from driftloop.services.monitoring.core.recent import RecentValues
from driftloop.services.monitoring.core.sequential import ErrorRateGlr, alarm_rate, first_alarm
from driftloop.shared.profile import ReferenceProfile

MAE = "_mae"
"""Evidence name of the live MAE (test "mae")."""
RMSE = "_rmse"
"""Evidence name of the live RMSE (test "rmse")."""
ABS_ERROR = "_abs_error"
"""Evidence name of the absolute-error CUSUM bank against the reference (test "abs_error_cusum")."""
ABS_ERROR_SHIFT = "_abs_error_shift"
"""Evidence name of the live-stream GLR on errors above the reference MAE ("abs_error_glr")."""
ABS_ERROR_ADWIN = "_abs_error_adwin"
"""Evidence name of river's ADWIN on errors above the reference MAE ("abs_error_adwin")."""
REGRESSION_GLR_SHARE = 0.9
"""Share of the MAE detectors' false-alarm budget spent by the live-stream GLR; the CUSUM bank
gets the rest. The classifier's bank moved to an even split (performance.GLR_SHARE) once its
CUSUMs' reference lost its excess margin; the MAE bank's reference keeps its own margin and
was not re-measured, so it keeps the share it had."""
POINTS = 240
"""MAE-over-time points kept per version (for the report's plot)."""


def numeric_labels(
    request_ids: Sequence[str], labels: Sequence[str]
) -> tuple[list[str], list[str], list[str]]:
    """(request ids, labels) of the labels that are finite decimal numbers, and the others."""
    values = parse_numbers(labels)
    ok = np.isfinite(values)
    ids = [i for i, good in zip(request_ids, ok, strict=True) if good]
    kept = [label for label, good in zip(labels, ok, strict=True) if good]
    invalid = [str(label) for label, good in zip(labels, ok, strict=True) if not good]
    return ids, kept, invalid


def parse_numbers(texts: Sequence[str]) -> np.ndarray:
    """Labels or predictions as floats; NaN where a text is not a finite decimal number."""
    out = np.full(len(texts), np.nan)
    for i, text in enumerate(texts):
        try:
            value = float(text)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[i] = value
    return out


@dataclass(frozen=True)
class RegressionReference:
    """What live residuals are compared with: the reference MAE and RMSE, over `rows` rows."""

    mae: float
    rmse: float
    rows: float
    source: str
    """"profile" (held-out metrics from training) or "live" (first labelled rows)."""

    @property
    def sd(self) -> float:
        """sd(|error|) = sqrt(RMSE^2 - MAE^2)."""
        return math.sqrt(max(self.rmse**2 - self.mae**2, 0.0))

    @property
    def margin(self) -> float:
        """Two standard errors of the MAE estimate: the CUSUMs' reference is taken this high,
        so that a lucky holdout cannot make them drift upwards on a stationary stream."""
        return 2.0 * self.sd / math.sqrt(max(self.rows, 1.0))


def regression_reference(profile: ReferenceProfile) -> RegressionReference | None:
    """The profile's held-out MAE and RMSE, over metrics["holdout_rows"] rows (else a quarter
    of the training rows, the default 20% holdout); None when training recorded neither."""
    mae, rmse = profile.metrics.get("mae"), profile.metrics.get("rmse")
    if mae is None or rmse is None or not (math.isfinite(mae) and math.isfinite(rmse)):
        return None
    if mae < 0 or rmse < mae * (1.0 - 1e-9):
        return None  # impossible figures (RMSE >= MAE always): no reference rather than a wrong one
    rows = max(1.0, profile.metrics.get("holdout_rows", profile.rows / 4))
    return RegressionReference(mae, max(rmse, mae), rows, "profile")


@dataclass(frozen=True)
class ErrorPoint:
    """The MAE of consecutive labelled rows, for the report's error-over-time plot."""

    at: float
    """When the last of them was predicted (the prediction log's time)."""
    rows: int
    """Labelled rows up to and including them."""
    mae: float


class RegressionTracker:
    """Labelled rows of one regressor version: live MAE/RMSE, the absolute-error bank, and the
    label (target) distribution against the training target's."""

    def __init__(
        self,
        reference: RegressionReference | None,
        *,
        target_sample: Sequence[float] = (),
        burn_in_rows: int,
        window_rows: int,
        mae_shift: float,
        error_arl0: float,
        adwin_delta: float = 0.0,
    ) -> None:
        self.reference: RegressionReference | None = None
        self.target_sample = np.asarray(target_sample, dtype=float)
        """The training target's sample (an array: a list of floats costs four times as much)."""
        self.labelled_rows = 0
        self._burn_in_rows = burn_in_rows
        self._window_rows = window_rows
        self._mae_shift = mae_shift
        # The same budget as the classifier's bank: one false alarm per error_arl0 rows,
        # REGRESSION_GLR_SHARE of it to the live-stream GLR, the rest to the CUSUM bank; ADWIN
        # outside (measured).
        self._arl0 = error_arl0
        self._adwin_delta = adwin_delta
        self.cusum: AbsErrorCusumBank | None = None
        self.glr: ErrorRateGlr | None = None
        self.adwin: ErrorRateAdwin | None = None
        self.fired = ""
        """Evidence name of the detector behind the latest alarm."""
        self.change_rows = 0
        """At an alarm, the GLR's estimate of how many labelled rows before the alarm row the
        errors grew (0: no estimate)."""
        self._abs = RecentValues(window_rows)
        self._labels = RecentValues(window_rows)
        self._predictions = RecentValues(window_rows)
        self._burn_in: list[tuple[float, float]] = []
        self.points: collections.deque[ErrorPoint] = collections.deque(maxlen=POINTS)
        self._point_rows = max(20, window_rows // 5)
        self._bucket: list[float] = []
        self._bucket_at = -math.inf
        if reference is not None:
            self._start(reference)

    def _start(self, reference: RegressionReference) -> None:
        self.reference = reference
        shift = self._mae_shift * reference.mae / max(reference.sd, 1e-12)
        self.cusum = AbsErrorCusumBank(
            reference.mae,
            reference.sd,
            reference.margin,
            shift,
            self._arl0 / (1.0 - REGRESSION_GLR_SHARE),
        )
        self.glr = ErrorRateGlr(self._arl0 / REGRESSION_GLR_SHARE)
        if self._adwin_delta > 0:
            self.adwin = ErrorRateAdwin(self._adwin_delta)

    def observe(
        self, predictions: Sequence[str], labels: Sequence[str], ts: Sequence[float] = ()
    ) -> int | None:
        """Add labelled rows (numbers as text; a pair either of which is not a finite number is
        skipped); the index of the row at which the errors grew, or None."""
        truth, predicted = parse_numbers(labels), parse_numbers(predictions)
        rows = np.flatnonzero(np.isfinite(truth) & np.isfinite(predicted))
        if len(rows) == 0:
            return None
        truth, predicted = truth[rows], predicted[rows]
        errors = np.abs(truth - predicted)
        errors = np.where(np.isfinite(errors), errors, np.finfo(float).max)  # 1e308 - (-1e308)
        self.labelled_rows += len(rows)
        self._abs.extend(errors)
        self._labels.extend(truth)
        self._predictions.extend(predicted)
        at = np.asarray(ts, dtype=float)[rows] if len(ts) else np.zeros(len(rows))
        at = np.where(np.isfinite(at), at, 0.0)
        self._add_points(errors, at)
        start = 0
        if self.reference is None:
            start = self._collect_burn_in(errors, truth)
        if self.reference is None or start >= len(errors):
            return None
        found = self._detect(errors[start:])
        return None if found is None else int(rows[start + found])

    def _detect(self, errors: np.ndarray) -> int | None:
        if self.reference is None or self.cusum is None or self.glr is None:
            return None
        above = errors > self.reference.mae
        crossed = self.cusum.update(errors)
        shifted = self.glr.update(above)
        cut = None if self.adwin is None else self.adwin.update(above)
        alarm = first_alarm(
            ((crossed, ABS_ERROR), (shifted, ABS_ERROR_SHIFT), (cut, ABS_ERROR_ADWIN)),
            self.glr,
            ABS_ERROR_SHIFT,
            len(errors),
        )
        if alarm is None:
            return None
        index, self.fired, self.change_rows = alarm
        return index

    def _collect_burn_in(self, errors: np.ndarray, truth: np.ndarray) -> int:
        """Use the first labelled rows as the reference when the profile has none."""
        take = min(len(errors), self._burn_in_rows - len(self._burn_in))
        self._burn_in.extend(zip(errors[:take].tolist(), truth[:take].tolist(), strict=True))
        if len(self._burn_in) >= self._burn_in_rows:
            abs_errors = np.array([e for e, _ in self._burn_in])
            mae = float(abs_errors.mean())
            rmse = float(np.sqrt(np.mean(abs_errors**2)))
            if len(self.target_sample) == 0:
                self.target_sample = np.array([y for _, y in self._burn_in], dtype=float)
            self._start(RegressionReference(mae, max(rmse, mae), len(abs_errors), "live"))
            self._burn_in = []
        return take

    def _add_points(self, errors: np.ndarray, at: np.ndarray) -> None:
        """Cut the error stream into points of `_point_rows` consecutive labelled rows."""
        done = 0
        while done < len(errors):
            take = min(len(errors) - done, self._point_rows - len(self._bucket))
            self._bucket.extend(errors[done : done + take].tolist())
            self._bucket_at = max(self._bucket_at, float(at[done : done + take].max()))
            done += take
            if len(self._bucket) >= self._point_rows:
                rows = self.labelled_rows - (len(errors) - done)
                self.points.append(ErrorPoint(self._bucket_at, rows, float(np.mean(self._bucket))))
                self._bucket, self._bucket_at = [], -math.inf

    def live(self) -> tuple[float, float] | None:
        """(MAE, RMSE) of the latest label window; None before any labelled row."""
        if not self._abs:
            return None
        errors = self._abs.values()
        return float(errors.mean()), float(np.sqrt(np.mean(errors**2)))

    def evidence(self, alpha: float) -> tuple[FeatureDrift, ...]:
        """Live MAE and RMSE, the bank's state and the label test, once there is a reference.

        Encoded as FeatureDrift entries, as the classifier's: "_mae"/"mae": statistic = live MAE
        of the label window, threshold = the reference MAE, p_value = one-sided z-test of the
        difference (the window's and the holdout's standard errors). "_rmse"/"rmse": the same
        for the RMSE (z-test of the mean squared error, the window's standard error).
        "_abs_error"/"abs_error_cusum": statistic = the strongest CUSUM (at its latest alarm,
        else now), threshold = its h, p_value = exp(-theta statistic) (Wald's bound).
        "_abs_error_shift"/"abs_error_glr" and "_abs_error_adwin"/"abs_error_adwin": the GLR and
        ADWIN on the 0/1 stream "error above the reference MAE" (see PerformanceTracker).
        "_label"/"label_ks": KS of the label window against the training target.
        """
        ref, live = self.reference, self.live()
        if ref is None or live is None or self.cusum is None or self.glr is None:
            return ()
        errors = self._abs.values()
        n = len(errors)
        se = math.sqrt(float(errors.var()) / n + ref.sd**2 / ref.rows)
        p_mae = _upper_tail(live[0] - ref.mae, se)
        squares = errors**2
        p_rmse = _upper_tail(float(squares.mean()) - ref.rmse**2, math.sqrt(squares.var() / n))
        strongest = self.cusum.strongest()
        glr = max(self.glr.statistic, self.glr.alarm_statistic)
        found = [
            FeatureDrift(MAE, "mae", live[0], p_mae, ref.mae, False),
            FeatureDrift(RMSE, "rmse", live[1], p_rmse, ref.rmse, False),
            FeatureDrift(
                ABS_ERROR,
                "abs_error_cusum",
                max(strongest.statistic, strongest.alarm_statistic),
                strongest.bound(),
                strongest.threshold,
                False,
            ),
            FeatureDrift(
                ABS_ERROR_SHIFT, "abs_error_glr", glr, alarm_rate(glr), self.glr.threshold, False
            ),
            *self._adwin_evidence(),
        ]
        prior = self.label_prior(alpha)
        return (*found, *([prior] if prior else []))

    def _adwin_evidence(self) -> tuple[FeatureDrift, ...]:
        adwin = self.adwin
        if adwin is None:
            return ()
        if adwin.alarm_recent is not None and adwin.alarm_older is not None:
            statistic, threshold = adwin.alarm_recent, adwin.alarm_older
        else:
            statistic = threshold = adwin.estimate
        return (
            FeatureDrift(
                ABS_ERROR_ADWIN, "abs_error_adwin", statistic, adwin.delta, threshold, False
            ),
        )

    def label_prior(self, alpha: float) -> FeatureDrift | None:
        """KS of the full label window against the training target's sample (tested at alpha,
        as the classifier's label-prior chi-squared)."""
        if len(self._labels) < self._window_rows or len(self.target_sample) < 2:
            return None
        result = ks_test(self.target_sample, pd.Series(self._labels.values(), dtype=float))
        if result is None:
            return None
        statistic, p_value = result
        return FeatureDrift(LABEL, "label_ks", statistic, p_value, alpha, p_value < alpha)

    def window(self) -> tuple[list[float], list[float]]:
        """(predictions, labels) of the latest label window, oldest first."""
        return list(self._predictions), list(self._labels)

    def window_full(self) -> bool:
        return len(self._labels) >= self._window_rows


def _upper_tail(difference: float, se: float) -> float:
    """One-sided p-value of a rise this large under no rise (normal approximation)."""
    if not math.isfinite(difference):
        return 0.0 if difference > 0 else 1.0
    if se <= 0 or not math.isfinite(se):
        return 0.0 if difference > 0 else 1.0
    return float(stats.norm.sf(difference / se))


LabelTracker: TypeAlias = PerformanceTracker | RegressionTracker
"""A version's live performance: a classifier's error-rate bank or a regressor's residuals."""


def tracker_for(profile: ReferenceProfile, policy: DriftPolicy) -> LabelTracker:
    """The performance tracker of the profile's task, set up by the policy."""
    if profile.task == "regression":
        target = profile.target
        sample = target.sample if target is not None and target.kind == "numeric" else []
        return RegressionTracker(
            regression_reference(profile),
            target_sample=sample,
            burn_in_rows=policy.label_burn_in_rows,
            window_rows=policy.label_window_rows,
            mae_shift=policy.mae_shift,
            error_arl0=policy.error_arl0_rows,
            adwin_delta=policy.adwin_delta,
        )
    return PerformanceTracker(
        profile_reference(profile),
        burn_in_rows=policy.label_burn_in_rows,
        window_rows=policy.label_window_rows,
        error_shift=policy.error_shift,
        error_arl0=policy.error_arl0_rows,
        adwin_delta=policy.adwin_delta,
    )
