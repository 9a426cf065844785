"""Synthetic labelled data for the demo, before and after a real drift.

Before: x0..x3 ~ N(0, 1), segment in {a, b, c}; label = 1 when x0 + 0.5*x1 + bonus(segment) > 0.
After the shift the population moves (x0 ~ N(2, 1)) and so does the boundary (> 2): a model
trained before keeps answering 1 for most rows and its accuracy falls towards the base rate,
while a model retrained on the new rows recovers. Detection sees the shift in x0.
3% of labels are flipped, so no model is perfect.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = ["x0", "x1", "x2", "x3", "segment"]
TARGET = "label"
SEGMENT_BONUS = {"a": 0.5, "b": 0.0, "c": -0.5}
LABEL_NOISE = 0.03


def make_rows(
    n: int, *, drifted: bool = False, rng: np.random.Generator, shift: float | None = None
) -> pd.DataFrame:
    """`n` labelled rows; x0's mean and the decision boundary sit at `shift` (default: 2 when
    drifted, else 0)."""
    if shift is None:
        shift = 2.0 if drifted else 0.0
    frame = pd.DataFrame(
        {
            "x0": rng.normal(shift, 1.0, n),
            "x1": rng.normal(0.0, 1.0, n),
            "x2": rng.normal(0.0, 1.0, n),
            "x3": rng.normal(0.0, 1.0, n),
            "segment": rng.choice(list(SEGMENT_BONUS), n),
        }
    )
    bonus = frame["segment"].map(SEGMENT_BONUS).to_numpy()
    score = frame["x0"].to_numpy() + 0.5 * frame["x1"].to_numpy() + bonus
    positive = (score > shift) ^ (rng.random(n) < LABEL_NOISE)
    frame[TARGET] = np.where(positive, "1", "0")
    return frame
