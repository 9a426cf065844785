"""Where a label-prior shift began: the change point of the recent labels' classes.

The label-prior test (a chi-squared of the label window's classes against the reference
frequencies) says *that* the classes moved, not *since when*. Without an estimate, a retrain
could only count rows from the alarm on and would wait for rows that had arrived long before:
the test fires hundreds of labels after the change. The estimate is the start k of the recent
labels' suffix whose class frequencies are the likeliest departure from the reference: the
generalised likelihood ratio

    GLR(k) = sum over rows i >= k of log(p_k(y_i) / p_ref(y_i)),

p_k the suffix's own class frequencies, maximised over k. A suffix drawn from the reference
scores about a chi-squared / 2 whatever its length; one drawn after a change grows with its
length times the two distributions' divergence, so the maximum sits near the change point.

The monitor keeps a classifier's labels of as many recent rows as it keeps join times for
(CHANGE_LOOKBACK) as small codes, 8 bytes a label: a fleet runs thousands of monitors. A
regressor's labels are binned at the training target sample's deciles, whose reference shares
are a tenth each, and only its label window (which the tracker keeps anyway) is searched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from driftloop.services.monitoring.core.recent import RecentValues

MIN_SUFFIX_ROWS = 30
"""The shortest suffix considered: fewer rows give frequencies too rough to compare."""
MAX_CLASSES = 256
"""Distinct labels given their own code; any further one shares the code of the unseen (labels
are callers' text: a stream of ever-new labels must not grow the dictionary without bound)."""
QUANTILE_BINS = 10
"""A regressor's labels are compared in this many bins of the training target's quantiles."""
_OTHER = -1


class LabelCodes:
    """The latest `capacity` labels of one version, as codes of a per-version dictionary."""

    __slots__ = ("_codes", "_names")

    def __init__(self, capacity: int) -> None:
        self._codes = RecentValues(capacity)
        self._names: dict[str, int] = {}

    def extend(self, labels: Iterable[str]) -> None:
        self._codes.extend([self._code(y) for y in labels])

    def __len__(self) -> int:
        return len(self._codes)

    def change_rows(
        self,
        frequencies: dict[str, float],
        reference_rows: int,
        *,
        min_rows: int = MIN_SUFFIX_ROWS,
    ) -> int:
        """Labels, counted back from the newest, since the most likely change of the class
        frequencies away from `frequencies` (0: no estimate, fewer than `min_rows` labels or a
        reference without classes). A class the reference never saw gets the share the
        chi-squared test gives it, 0.5 / reference_rows."""
        rows = len(self._codes)
        shares = {k: v for k, v in frequencies.items() if v > 0}
        total = sum(shares.values())
        if rows < min_rows or not shares or total <= 0:
            return 0
        unseen = 0.5 / max(1, reference_rows)
        # bucket j < len(names): the label named j; the last bucket: every label without a share
        probabilities = [
            shares[name] / total * (1.0 - unseen) if name in shares else unseen
            for name in self._names
        ]
        probabilities.append(unseen)
        codes = self._codes.values().astype(np.int64)
        codes[codes == _OTHER] = len(self._names)
        return _glr_change_rows(codes, np.asarray(probabilities), min_rows)

    def _code(self, label: str) -> int:
        code = self._names.get(label)
        if code is None:
            if len(self._names) >= MAX_CLASSES:
                return _OTHER
            code = self._names[label] = len(self._names)
        return code


def numeric_change_rows(
    values: Sequence[float] | np.ndarray,
    reference_sample: Sequence[float] | np.ndarray,
    *,
    bins: int = QUANTILE_BINS,
    min_rows: int = MIN_SUFFIX_ROWS,
) -> int:
    """A regressor's labels (oldest first): the same estimate, over the bins the reference
    sample's quantiles cut (a value past the sample's range falls in an end bin). 0 without an
    estimate: fewer than `min_rows` values, or a sample too small or too tied to cut."""
    live = np.asarray(values, dtype=float)
    reference = np.asarray(reference_sample, dtype=float)
    reference = reference[np.isfinite(reference)]
    if len(live) < min_rows or len(reference) < 2 * bins or not np.isfinite(live).all():
        return 0
    edges = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    if len(edges) == 0:
        return 0
    counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    shares = np.maximum(counts, 0.5) / max(1.0, float(counts.sum()))
    codes = np.searchsorted(edges, live, side="right")
    return _glr_change_rows(codes, shares / shares.sum(), min_rows)


def _glr_change_rows(codes: np.ndarray, reference: np.ndarray, min_rows: int) -> int:
    rows = len(codes)
    onehot = np.zeros((rows, len(reference)))
    onehot[np.arange(rows), codes] = 1.0
    suffix = onehot[::-1].cumsum(axis=0)[::-1]  # row k: class counts of rows k .. rows-1
    length = rows - np.arange(rows, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = suffix * np.log(suffix / (length[:, None] * reference))
    glr = np.where(suffix > 0, terms, 0.0).sum(axis=1)
    glr[length < min_rows] = -np.inf
    return int(rows - int(np.argmax(glr)))
