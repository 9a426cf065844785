"""Where does monitoring decide on each recovery stream, without the stack? `driftloop bench
recovery --detection` replays every stream offline through the monitor's own ModelMonitor (#17).

Version 1 is trained as training trains a first version (every training row, scored out of fold:
the profile the registry would hold); its predictions of the live rows are logged BATCH rows at a
time and their labels fed back `label_delay` rows late, LABEL_CHUNK at a time, as the live bench
sends them. What it leaves out: the stack's own delays (Kafka, the prediction log, scheduling),
so a live run's detection row minus this one measures them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from driftloop.shared.cli.bench.recovery_streams import TARGET, Stream

BATCH = 10
"""Rows per logged prediction batch (the live bench's rows per request)."""
LABEL_CHUNK = 50
"""Labels sent together once this many are due (as the live bench does)."""


def replay_detection(
    streams: Sequence[Stream], policy: Any, *, label_delay: int, rate: float
) -> list[dict[str, Any]]:
    """One row per stream: version 1's profile, the error rates its detectors start from, the
    live pre-drift error, and the monitor's first decision (live row, rows from the drift, what
    drifted)."""
    return [_replay(stream, policy, label_delay, rate) for stream in streams]


def _replay(stream: Stream, policy: Any, label_delay: int, rate: float) -> dict[str, Any]:
    from driftloop.services.monitoring.core.monitor import REQUEST_ID, ModelMonitor
    from driftloop.services.monitoring.core.window import TS
    from driftloop.services.training.core import trainer
    from driftloop.shared.cli.bench.recovery_metrics import model_spec
    from driftloop.shared.profile import PREDICTION

    features = list(stream.features)
    trained = trainer.train_candidate(
        stream.name, stream.train, TARGET, model_spec(features), cross_validate=True
    )
    predicted = np.asarray(trained.pipeline.predict(stream.live[features])).astype(str)
    truth = stream.live[TARGET].to_numpy().astype(str)
    monitor = ModelMonitor(stream.name, policy, "1", trained.profile)
    start = monitor.performance.reference
    log = stream.live[features].copy()
    log[PREDICTION] = predicted
    log[TS] = np.arange(len(log)) / rate
    log[REQUEST_ID] = [f"r{i}" for i in range(len(log))]
    decisions: list[tuple[int, tuple[str, ...]]] = []
    labelled = 0
    for begin in range(0, len(log), BATCH):
        end = min(begin + BATCH, len(log))
        now = end / rate
        decision = monitor.observe("1", log.iloc[begin:end], now)
        if decision is not None:
            decisions.append((end, _drifted(decision)))
        due = max(0, end - label_delay)
        while due - labelled >= LABEL_CHUNK or (end == len(log) and labelled < due):
            upto = min(due, labelled + LABEL_CHUNK)
            ids = [f"r{i}" for i in range(labelled, upto)]
            decision = monitor.observe_labels(ids, truth[labelled:upto].tolist(), now)
            labelled = upto
            if decision is not None:
                decisions.append((end, _drifted(decision)))
    return _row(stream, trained, start, monitor, predicted != truth, decisions)


def _drifted(decision: Any) -> tuple[str, ...]:
    return tuple(f.feature for f in decision.features if f.drifted)


def _row(
    stream: Stream,
    trained: Any,
    start: Any,
    monitor: Any,
    errors: np.ndarray,
    decisions: list[tuple[int, tuple[str, ...]]],
) -> dict[str, Any]:
    drift = stream.drift_at
    before = errors[: stream.drift_start] if stream.drift_start is not None else errors
    first = decisions[0] if decisions else None
    after = monitor.performance.reference
    return {
        "stream": stream.name,
        "kind": stream.kind,
        "profile_error": round(1.0 - trained.metrics["accuracy"], 4),
        "reference_error_start": None if start is None else round(start.error_rate, 4),
        "reference_error_end": None if after is None else round(after.error_rate, 4),
        "reference_source_end": "" if after is None else after.source,
        "live_error_before_drift": round(float(before.mean()), 4),
        "decisions": len(decisions),
        "alarms_before_drift": sum(1 for row, _ in decisions if drift is None or row < drift),
        "decision_row": None if first is None else first[0],
        "rows_to_detection": None if first is None or drift is None else first[0] - drift,
        "drifted": [] if first is None else list(first[1]),
    }


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median rows to detection over the drifted streams that were detected, and alarms
    where there was nothing to find."""
    drifted = [r for r in rows if r["kind"] not in ("harmless", "stationary")]
    detected = [r["rows_to_detection"] for r in drifted if r["rows_to_detection"] is not None]
    return {
        "episodes": len(drifted),
        "episodes_detected": sum(1 for r in drifted if r["rows_to_detection"] is not None),
        "median_rows_to_detection": float(np.median(detected)) if detected else None,
        "alarms_before_drift": sum(r["alarms_before_drift"] for r in drifted),
        "stationary_detections": sum(r["decisions"] for r in rows if r["kind"] == "stationary"),
    }


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The rows of the command's table."""

    def text(value: Any) -> str:
        return "-" if value is None else str(value)

    return [
        [
            r["stream"],
            r["kind"],
            text(r["profile_error"]),
            text(r["reference_error_start"]),
            text(r["live_error_before_drift"]),
            text(r["rows_to_detection"]),
            ", ".join(r["drifted"]) or "-",
        ]
        for r in rows
    ]


COLUMNS = (
    "stream",
    "kind",
    "profile error",
    "CUSUM p0",
    "live error before",
    "rows to detection",
    "drifted",
)
