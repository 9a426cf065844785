"""Replay of a labelled stream through the real ModelMonitor, and scoring of any detector's
alarms against the stream's known drift point (what `driftloop bench drift` measures).

Pure: no transport. Rows are 10 ms apart; labels arrive right after their prediction batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.monitor import REQUEST_ID, TS, DriftDecision, ModelMonitor
from driftloop.services.monitoring.core.report import f1_macro
from driftloop.shared.profile import PREDICTION, ReferenceProfile, build_profile

ROW_SECONDS = 0.01


@dataclass(frozen=True)
class LabelledStream:
    """Live rows with labels and at most one known drift, plus the reference they drift from."""

    name: str
    kind: str
    """"abrupt", "gradual", "categorical", "concept" or "stationary"."""
    reference: pd.DataFrame
    """Training features (the model's reference)."""
    reference_predictions: pd.Series
    live: pd.DataFrame
    """Live features plus PREDICTION (the fixed model's outputs)."""
    labels: np.ndarray
    drift_start: int | None = None
    """First live row that differs from the reference (None: stationary)."""
    drift_at: int | None = None
    """The row delays are measured from: drift_start, or the middle of a gradual ramp (the
    `position` convention of river's ConceptDriftStream)."""
    reference_labels: np.ndarray | None = None
    """Labels of the reference rows: training's holdout accuracy and label frequencies."""

    @property
    def errors(self) -> np.ndarray:
        return self.live[PREDICTION].to_numpy() != self.labels

    @property
    def stationary_rows(self) -> int:
        return len(self.live) if self.drift_start is None else self.drift_start


@dataclass(frozen=True)
class StreamScore:
    """One detector on one stream: drift found (and how late), false alarms before it."""

    drifts: int
    detected: int
    delay_rows: int | None
    false_alarms: int
    stationary_rows: int


def score(stream: LabelledStream, alarm_rows: list[int]) -> StreamScore:
    """Alarms before drift_start are false; the first at or after it detects the drift.

    Delay = rows from drift_at up to and including the alarm row (0 when a gradual drift is
    caught before its middle). Alarms after the detection belong to the same episode.
    """
    start = stream.drift_start
    if start is None:
        return StreamScore(0, 0, None, len(alarm_rows), stream.stationary_rows)
    false_alarms = sum(1 for r in alarm_rows if r < start)
    hits = [r for r in alarm_rows if r >= start]
    if not hits:
        return StreamScore(1, 0, None, false_alarms, stream.stationary_rows)
    at = stream.drift_at if stream.drift_at is not None else start
    return StreamScore(1, 1, max(0, hits[0] + 1 - at), false_alarms, stream.stationary_rows)


def reference_profile(
    stream: LabelledStream, version: str = "1", holdout_fraction: float = 0.2
) -> ReferenceProfile:
    """The profile training would store: like services/training/core/trainer.py's train_candidate,
    the newest `holdout_fraction` of the reference is held out; features, predictions and
    labels of the rest are profiled, with the holdout's accuracy and macro F1 as metrics.
    Without reference labels: features and predictions only (the monitor then burns in)."""
    if stream.reference_labels is None:
        return build_profile(stream.name, version, stream.reference, stream.reference_predictions)
    n_train = len(stream.reference) - max(1, math.ceil(len(stream.reference) * holdout_fraction))
    predicted = stream.reference_predictions.astype(str).to_numpy()
    truth = stream.reference_labels.astype(str)
    return build_profile(
        stream.name,
        version,
        stream.reference.iloc[:n_train],
        pd.Series(predicted[:n_train]),
        target=pd.Series(truth[:n_train]),
        metrics={
            "accuracy": float(np.mean(predicted[n_train:] == truth[n_train:])),
            "f1_macro": float(f1_macro(list(predicted[n_train:]), list(truth[n_train:])) or 0.0),
        },
    )


def replay(stream: LabelledStream, policy: DriftPolicy, batch_rows: int = 250) -> list[int]:
    """Feed the stream to a ModelMonitor in prediction-log batches, labels after each batch.

    Every alarm is followed by a redeploy of the same reference as a new version (a retrain on
    unchanged data), as the loop would do. Stops at the first alarm after the drift start.
    Returns the row index of each alarm.
    """
    profile = reference_profile(stream)
    monitor = ModelMonitor(stream.name, policy, "1", profile)
    live = stream.live.assign(
        **{
            REQUEST_ID: np.arange(len(stream.live)).astype(str),
            TS: np.arange(len(stream.live)) * ROW_SECONDS,
        }
    )
    labels = stream.labels.astype(str)
    alarms: list[int] = []
    for begin in range(0, len(live), batch_rows):
        batch = live.iloc[begin : begin + batch_rows]
        now = (begin + len(batch)) * ROW_SECONDS
        found = [monitor.observe(monitor.version, batch, now)]
        ids = batch[REQUEST_ID].tolist()
        found.append(monitor.observe_labels(ids, labels[begin : begin + len(batch)].tolist(), now))
        rows = sorted(_alarm_row(d) for d in found if d is not None)
        if rows:
            alarms.extend(rows)
            monitor.switch(str(int(monitor.version) + 1), profile)
            if stream.drift_start is not None and rows[-1] >= stream.drift_start:
                break
    return alarms


def _alarm_row(decision: DriftDecision) -> int:
    return int(round(decision.window_end / ROW_SECONDS))
