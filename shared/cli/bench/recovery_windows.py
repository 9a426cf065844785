"""Which rows should a drift run train on? `driftloop bench recovery --windows` measures it on the
recovery streams, offline (no stack): for each drifted stream and k post-drift rows seen so far,
the spec's pipeline trained three ways, scored on an independent draw of the new regime.

- post-drift: only the k rows after the drift settled (what training does: `data_since`);
- recent: the window_rows most recent rows, pre- and post-drift mixed (what a scheduled retrain
  would see);
- weighted: the same recent rows, each weighted by 2^(-age / half_life), age in rows from the
  newest, half_life = k (the estimator's `sample_weight`).

Training's choice is post-drift only; this bench is the evidence for it (README, "How the loop
decides on ordinary drift").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from driftloop.shared.cli.bench.recovery_streams import MODERATE_KINDS, TARGET, Stream

ROWS = (250, 500, 1000, 2000)
WAYS = ("post-drift", "recent", "weighted")


def compare_windows(
    streams: Sequence[Stream], window_rows: int = 2000, rows: Sequence[int] = ROWS
) -> list[dict[str, Any]]:
    """One row per drifted stream and k: the accuracy of each way on the stream's `after`
    pool (rows generated after the live ones, never trained on)."""
    found = []
    for stream in streams:
        if stream.kind not in MODERATE_KINDS or stream.drift_end is None:
            continue
        history = pd.concat([stream.train, stream.live], ignore_index=True)
        settled = len(stream.train) + stream.drift_end
        for k in rows:
            end = settled + k
            if end > len(history):
                continue
            row: dict[str, Any] = {"stream": stream.name, "kind": stream.kind, "rows": k}
            for way in WAYS:
                row[way] = _score(stream, history, settled, end, window_rows, way)
            found.append(row)
    return found


def summary(found: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean accuracy of each way per k, and how often each way was best."""
    out: dict[str, Any] = {}
    for k in sorted({r["rows"] for r in found}):
        at = [r for r in found if r["rows"] == k]
        out[str(k)] = {way: round(float(np.mean([r[way] for r in at])), 4) for way in WAYS}
    wins = dict.fromkeys(WAYS, 0)
    for r in found:
        wins[max(WAYS, key=lambda w: r[w])] += 1
    return {"mean_accuracy_by_rows": out, "best_count": wins}


def _score(
    stream: Stream, history: pd.DataFrame, settled: int, end: int, window_rows: int, way: str
) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = list(stream.features)
    if way == "post-drift":
        rows = history.iloc[settled:end]
        weights = None
    else:
        rows = history.iloc[max(0, end - window_rows) : end]
        weights = None
        if way == "weighted":
            age = np.arange(len(rows))[::-1].astype(float)
            weights = np.power(2.0, -age / max(1, end - settled))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    fit_args = {} if weights is None else {"logisticregression__sample_weight": weights}
    model.fit(rows[features], rows[TARGET], **fit_args)
    predicted = model.predict(stream.after[features])
    return float(np.mean(predicted == stream.after[TARGET].to_numpy()))
