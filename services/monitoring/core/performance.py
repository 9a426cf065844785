"""Live performance from delayed labels: predictions joined to labels by request id, a bank of
error-rate change detectors (Bernoulli CUSUMs against the reference, a GLR and river's ADWIN
within the live stream: error_detectors.py, sequential.py) and a label-distribution (prior)
drift test.

Pure domain logic; the monitor feeds it logged predictions and label batches.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from driftloop.services.monitoring.core.drift import FeatureDrift, chi2_test
from driftloop.services.monitoring.core.error_detectors import CusumBank, ErrorRateAdwin
from driftloop.services.monitoring.core.sequential import ErrorRateGlr, alarm_rate, first_alarm
from driftloop.shared.profile import ReferenceProfile

ACCURACY = "_accuracy"
"""Evidence name of the live accuracy (test "accuracy")."""
ERROR_RATE = "_error_rate"
"""Evidence name of the error-rate change detector against the reference (test "cusum")."""
ERROR_SHIFT = "_error_shift"
"""Evidence name of the error-rate change detector within the live stream (test "glr")."""
ERROR_ADWIN = "_error_adwin"
"""Evidence name of river's ADWIN on the live error stream (test "adwin")."""
LABEL = "_label"
"""Evidence name of the label-distribution test (test "label_prior")."""
GLR_SHARE = 0.9
"""Share of the error-rate false-alarm budget spent by the live-stream GLR (the faster of the
two detectors on every error-rate increase we measured); the CUSUM bank gets the rest."""


Pending = tuple[str, str, float]
"""A logged prediction waiting for its label: (version, prediction, logged at)."""
JOINED = "joined"
"""State of a request id whose label joined (remembered so a replayed label is not counted)."""
PendingState = Pending | str | None
"""What the journal records per request id: waiting (Pending), JOINED, or forgotten (None)."""


def as_texts(column: pd.Series) -> list[str]:
    """A logged column's values as text, as `astype(str)` writes them, at a fraction of its
    cost (120 us for two float64s, 1 us this way: a fleet logs a row or two at a time).
    float32 keeps astype (str of the widened float would print its binary expansion)."""
    dtype = column.dtype
    types = pd.api.types
    fast = types.is_object_dtype(dtype) or types.is_string_dtype(dtype) or dtype.kind in "iub"
    if fast or (dtype.kind == "f" and dtype.itemsize == 8):
        return [str(v) for v in column.tolist()]
    return [str(v) for v in column.astype(str).tolist()]


class PredictionJoin:
    """The most recent logged predictions by request id, bounded: labels may come much later,
    but memory must not grow with traffic. The oldest entries are forgotten first.

    It also remembers the ids most recently joined (as many as it holds predictions), so a
    label sent again (a producer's retry, a redelivery) is told apart from a label of an
    unknown request: counted in `duplicates`, and never joined twice.

    With `journal`, every change of an id's state is also appended to `changes` (id, state) in
    the order it happened, for the adapter to write to a changelog and drain; `restore` replays
    such states (the latest per id) after a restart."""

    def __init__(self, capacity: int, *, journal: bool = False) -> None:
        self.capacity = capacity
        self.evicted = 0
        self.duplicates = 0
        self.journal = journal
        self.changes: list[tuple[str, PendingState]] = []
        self._rows: collections.OrderedDict[str, Pending] = collections.OrderedDict()
        self._joined: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def add(
        self, version: str, request_ids: list[str], predictions: list[str], ts: list[float]
    ) -> None:
        """Keep logged predictions; an id already joined is skipped (a replayed log)."""
        for request_id, prediction, at in zip(request_ids, predictions, ts, strict=True):
            if request_id in self._joined:
                continue
            self._rows[request_id] = (version, prediction, at)
            if self.journal:
                self.changes.append((request_id, (version, prediction, at)))
        self._trim_rows()

    def _trim_rows(self) -> None:
        overflow = max(0, len(self._rows) - self.capacity)
        for _ in range(overflow):
            forgotten, _ = self._rows.popitem(last=False)
            if self.journal:
                self.changes.append((forgotten, None))
        self.evicted += overflow

    def _trim_joined(self) -> None:
        for _ in range(len(self._joined) - self.capacity):
            forgotten, _ = self._joined.popitem(last=False)
            if self.journal:
                self.changes.append((forgotten, None))

    def was_joined(self, request_id: str) -> bool:
        """Whether a label already joined this request id (recently)."""
        return request_id in self._joined

    def take(self, request_ids: list[str]) -> list[Pending | None]:
        """(version, prediction, logged at) of each id, removed; None when unknown, evicted or
        joined before (those add to `duplicates`)."""
        hits = []
        for request_id in request_ids:
            hit = self._rows.pop(request_id, None)
            if hit is not None:
                self._joined[request_id] = None
                if self.journal:
                    self.changes.append((request_id, JOINED))
            elif request_id in self._joined:
                self.duplicates += 1
            hits.append(hit)
        self._trim_joined()
        return hits

    def forget(self, request_ids: list[str]) -> None:
        """Drop these ids, waiting or joined (a fleet's index forgot them: see core/fleet.py)."""
        for request_id in request_ids:
            joined = request_id in self._joined
            waiting = self._rows.pop(request_id, None) is not None
            self._joined.pop(request_id, None)
            if (waiting or joined) and self.journal:
                self.changes.append((request_id, None))

    def drain(self) -> list[tuple[str, PendingState]]:
        """The changes recorded since the last drain (oldest first), forgotten here."""
        changes, self.changes = self.changes, []
        return changes

    def restore(self, states: list[tuple[str, PendingState]]) -> None:
        """Replay recorded states (oldest first; the latest per id wins), within capacity.
        Nothing is journalled: these states are already in the changelog."""
        for request_id, state in states:
            self._rows.pop(request_id, None)
            self._joined.pop(request_id, None)
            if state == JOINED:
                self._joined[request_id] = None
            elif isinstance(state, tuple):
                self._rows[request_id] = state
        journal, self.journal = self.journal, False
        try:
            self._trim_rows()
            self._trim_joined()
        finally:
            self.journal = journal


@dataclass(frozen=True)
class PerformanceReference:
    """What live performance is compared with: an error rate and label frequencies."""

    error_rate: float
    label_frequencies: dict[str, float]
    rows: int
    source: str
    """"profile" (held-out metrics from training) or "live" (first labelled window)."""
    f1_macro: float | None = None
    accuracy: float | None = None
    """As measured (error_rate may be taken a margin high); None: 1 - error_rate."""
    holdout_rows: float = 0.0
    """Rows behind `accuracy` (a real sample: the live-stream GLR uses it as its prefix)."""


class PerformanceTracker:
    """Labelled rows of one model version: live accuracy, error-rate CUSUM and label prior."""

    def __init__(
        self,
        reference: PerformanceReference | None,
        *,
        burn_in_rows: int,
        window_rows: int,
        error_shift: float,
        error_arl0: float,
        adwin_delta: float = 0.0,
    ) -> None:
        self.reference = reference
        self.labelled_rows = 0
        self._burn_in_rows = burn_in_rows
        self._window_rows = window_rows
        # The two detectors share the false-alarm budget of one alarm per error_arl0 rows
        # (alarm rates add): the live-stream GLR gets GLR_SHARE of it, the CUSUM bank the rest.
        self._shift, self._arl0 = error_shift, error_arl0 / (1.0 - GLR_SHARE)
        prior = (0, 0.0)
        if reference is not None and reference.accuracy is not None and reference.holdout_rows:
            n = round(reference.holdout_rows)
            prior = (n, n * (1.0 - reference.accuracy))
        self.glr = ErrorRateGlr(error_arl0 / GLR_SHARE, prior_rows=prior[0], prior_errors=prior[1])
        self.adwin = ErrorRateAdwin(adwin_delta) if adwin_delta > 0 else None
        """river's ADWIN on the live error stream (None: the policy turned it off)."""
        self.fired = ""
        """Evidence name of the detector behind the latest alarm (ERROR_RATE, ERROR_SHIFT or
        ERROR_ADWIN)."""
        self.change_rows = 0
        """At an alarm, the GLR's estimate of how many labelled rows before the alarm row the
        error rate changed (0: no estimate)."""
        self._errors: collections.deque[bool] = collections.deque(maxlen=window_rows)
        self._labels: collections.deque[str] = collections.deque(maxlen=window_rows)
        self._predictions: collections.deque[str] = collections.deque(maxlen=window_rows)
        self._burn_in: list[tuple[bool, str]] = []
        self.cusum = None if reference is None else self._cusum(reference)

    def _cusum(self, reference: PerformanceReference) -> CusumBank:
        return CusumBank(reference.error_rate, self._shift, self._arl0)

    def observe(self, predictions: list[str], labels: list[str]) -> int | None:
        """Add labelled rows; the index of the row at which the error rate shifted, or None."""
        errors = np.fromiter(
            (p != y for p, y in zip(predictions, labels, strict=True)), bool, len(labels)
        )
        self.labelled_rows += len(labels)
        self._errors.extend(errors.tolist())
        self._labels.extend(labels)
        self._predictions.extend(predictions)
        shifted = self.glr.update(errors)
        crossed = self._update_cusum(errors, labels)
        cut = None if self.adwin is None else self.adwin.update(errors)
        alarm = first_alarm(
            ((crossed, ERROR_RATE), (shifted, ERROR_SHIFT), (cut, ERROR_ADWIN)),
            self.glr,
            ERROR_SHIFT,
            len(errors),
        )
        if alarm is None:
            return None
        index, self.fired, self.change_rows = alarm
        return index

    def _update_cusum(self, errors: np.ndarray, labels: list[str]) -> int | None:
        start = 0
        if self.cusum is None:
            start = self._collect_burn_in(errors, labels)
        if self.cusum is None or start >= len(errors):
            return None
        crossed = self.cusum.update(errors[start:])
        return None if crossed is None else start + crossed

    def _collect_burn_in(self, errors: np.ndarray, labels: list[str]) -> int:
        """Use the first labelled rows as the reference when the profile has none."""
        take = min(len(labels), self._burn_in_rows - len(self._burn_in))
        self._burn_in.extend(zip(errors[:take].tolist(), labels[:take], strict=True))
        if len(self._burn_in) >= self._burn_in_rows:
            n = len(self._burn_in)
            rate = sum(e for e, _ in self._burn_in) / n
            # Two standard errors above the estimate: an under-estimated reference error rate
            # makes the CUSUM drift upwards on a stationary stream (one SE was not enough in
            # the bench's 1M stationary rows: the small-shift CUSUM fired once).
            rate += 2.0 * math.sqrt(max(rate * (1 - rate), 1.0 / n) / n)
            counts = collections.Counter(label for _, label in self._burn_in)
            freqs = {k: v / n for k, v in counts.items()}
            self.reference = PerformanceReference(rate, freqs, n, "live")
            self.cusum = self._cusum(self.reference)
            self._burn_in = []
        return take

    def evidence(self, alpha: float) -> tuple[FeatureDrift, ...]:
        """Accuracy, error-rate detector state and label-prior test, once there is a reference.

        Encoded as FeatureDrift entries (the DriftDetected proto has no performance fields):
        "_accuracy"/"accuracy": statistic = live accuracy of the labelled window, p_value = the
        one-sided binomial tail of its errors under the reference error rate, threshold = the
        reference accuracy. "_error_rate"/"cusum": statistic = the CUSUM (at its latest alarm,
        else now), threshold = ln(arl0), p_value = exp(-statistic) (the likelihood-ratio bound
        for one fixed change point). "_error_shift"/"glr": the live-stream GLR (its penalised
        statistic at its latest alarm, else now; threshold h; p_value = the calibrated
        in-control false alarms per labelled row at that level, sequential.alarm_rate).
        "_label"/"label_prior": chi-squared of the label window.
        """
        if not self._errors:
            return ()
        glr = max(self.glr.statistic, self.glr.alarm_statistic)
        shift = FeatureDrift(
            ERROR_SHIFT,
            "glr",
            glr,
            alarm_rate(glr),
            self.glr.threshold,
            False,
        )
        adwin = self._adwin_evidence()
        if self.reference is None or self.cusum is None:
            return (shift, *adwin)
        n = len(self._errors)
        errors = int(sum(self._errors))
        ref = self.reference
        strongest = self.cusum.strongest()
        cusum = max(strongest.statistic, strongest.alarm_statistic)
        # One-sided binomial tail: how surprising this many errors is under the reference rate.
        p_acc = float(stats.binom.sf(errors - 1, n, min(max(ref.error_rate, 1e-9), 1.0)))
        found = [
            FeatureDrift(
                ACCURACY, "accuracy", 1.0 - errors / n, p_acc, 1.0 - ref.error_rate, False
            ),
            FeatureDrift(
                ERROR_RATE,
                "cusum",
                cusum,
                min(1.0, math.exp(-cusum)),
                strongest.threshold,
                False,
            ),
            shift,
            *adwin,
        ]
        prior = self.label_prior(alpha)
        return (*found, *([prior] if prior else []))

    def _adwin_evidence(self) -> tuple[FeatureDrift, ...]:
        """ "_error_adwin"/"adwin": statistic = the recent rows' error rate at ADWIN's latest
        increase (else over its current window), threshold = the older rows' error rate at that
        cut (else the reference error rate, or the window's own), p_value = delta."""
        adwin = self.adwin
        if adwin is None:
            return ()
        if adwin.alarm_recent is not None and adwin.alarm_older is not None:
            statistic, threshold = adwin.alarm_recent, adwin.alarm_older
        else:
            statistic = adwin.estimate
            threshold = self.reference.error_rate if self.reference is not None else statistic
        return (FeatureDrift(ERROR_ADWIN, "adwin", statistic, adwin.delta, threshold, False),)

    def label_prior(self, alpha: float) -> FeatureDrift | None:
        """Chi-squared of the labelled window's classes against the reference label frequencies."""
        if self.reference is None or len(self._labels) < self._window_rows:
            return None
        ref = self.reference
        result = chi2_test(ref.label_frequencies, ref.rows, pd.Series(list(self._labels)))
        if result is None:
            return None
        statistic, p_value = result
        return FeatureDrift(LABEL, "label_prior", statistic, p_value, alpha, p_value < alpha)

    def window(self) -> tuple[list[str], list[str]]:
        """(predictions, labels) of the latest label window, oldest first."""
        return list(self._predictions), list(self._labels)

    def window_full(self) -> bool:
        return len(self._labels) >= self._window_rows


def profile_reference(profile: ReferenceProfile) -> PerformanceReference | None:
    """The profile's held-out accuracy and label frequencies, when training recorded them.

    The held-out error rate is an estimate: it is taken two standard errors high (as the
    burn-in's), over metrics["holdout_rows"] rows, else a quarter of the training rows (the
    default 20% holdout), so a lucky holdout cannot make the reference CUSUM drift upwards.
    """
    accuracy = profile.metrics.get("accuracy")
    if accuracy is None or profile.target is None or not profile.target.frequencies:
        return None
    rows = max(1, profile.target.count)
    holdout = max(1.0, profile.metrics.get("holdout_rows", rows / 4))
    error = 1.0 - accuracy
    error += 2.0 * math.sqrt(max(error * (1.0 - error), 1.0 / holdout) / holdout)
    f1 = profile.metrics.get("f1_macro")
    return PerformanceReference(
        error,
        profile.target.frequencies,
        rows,
        "profile",
        f1_macro=f1,
        accuracy=accuracy,
        holdout_rows=holdout,
    )
