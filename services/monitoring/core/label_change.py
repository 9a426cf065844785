"""Where a label-prior shift began: the change point of the labelled window's classes.

The label-prior test (a chi-squared of the window's classes against the reference frequencies)
says *that* the classes moved, not *since when*. Without an estimate, a retrain could only count
rows from the alarm on and would wait for all of them to arrive, although most of the window was
already drawn after the change. The estimate is the start k of the window's suffix whose class
frequencies are the likeliest departure from the reference: the generalised likelihood ratio

    GLR(k) = sum over rows i >= k of log(p_k(y_i) / p_ref(y_i)),

p_k the suffix's own class frequencies, maximised over k. A suffix drawn from the reference
scores about a chi-squared / 2 whatever its length; one drawn after a change grows with its
length times the two distributions' divergence, so the maximum sits near the change point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_SUFFIX_ROWS = 30
"""The shortest suffix considered: fewer rows give frequencies too rough to compare."""


def change_rows(
    labels: Sequence[str],
    frequencies: dict[str, float],
    reference_rows: int,
    *,
    min_rows: int = MIN_SUFFIX_ROWS,
) -> int:
    """Labelled rows, counted back from the newest, since the most likely change of the class
    frequencies away from `frequencies` (0: no estimate, the window is shorter than `min_rows`
    or the reference has no classes). A class the reference never saw gets the share the
    chi-squared test gives it, 0.5 / reference_rows."""
    rows = len(labels)
    shares = {k: v for k, v in frequencies.items() if v > 0}
    total = sum(shares.values())
    if rows < min_rows or not shares or total <= 0:
        return 0
    unseen = 0.5 / max(1, reference_rows)
    classes = list(shares)
    where = {c: i for i, c in enumerate(classes)}
    codes = np.fromiter((where.get(str(y), len(classes)) for y in labels), np.int64, rows)
    reference = np.array([shares[c] / total * (1.0 - unseen) for c in classes] + [unseen])
    onehot = np.zeros((rows, len(reference)))
    onehot[np.arange(rows), codes] = 1.0
    suffix = onehot[::-1].cumsum(axis=0)[::-1]  # row k: class counts of rows k .. rows-1
    length = rows - np.arange(rows, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = suffix * np.log(suffix / (length[:, None] * reference))
    glr = np.where(suffix > 0, terms, 0.0).sum(axis=1)
    glr[length < min_rows] = -np.inf
    return int(rows - int(np.argmax(glr)))
