"""One row per stream of `driftloop bench recovery`, and the summary over them: what serving
answered (row by row) set against the labels, the platform's own records and the reference
ladder, with the definitions of recovery_metrics.py."""

from __future__ import annotations

from typing import Any

import numpy as np

from driftloop.shared.cli.bench import recovery_metrics as m
from driftloop.shared.cli.bench.recovery_driver import Records, Served
from driftloop.shared.cli.bench.recovery_streams import MODERATE_KINDS, Stream


def stream_report(
    stream: Stream,
    served: Served,
    records: Records,
    judged: list[m.Judgement],
    ladder: m.Ladder | None,
    traffic_started: float,
    label_delay: int,
) -> dict[str, Any]:
    """Counts for every stream; the episode's figures too when the stream drifts moderately."""
    correct = np.array(served.predictions) == stream.live[m.TARGET].to_numpy()
    times = np.array(served.answered_at)
    start = stream.drift_start or 0
    # why the previous row's answer: the first drifted request leaves right after it
    boundary = float(times[start - 1]) if start else traffic_started
    row: dict[str, Any] = {
        "stream": stream.name,
        "kind": stream.kind,
        "source": stream.source,
        "rows": len(correct),
        "failed_requests": served.failed_requests,
        "failed_label_calls": served.failed_label_calls,
        "drift_row": stream.drift_at,
        "alarms_before_drift": sum(traffic_started <= t < boundary for t in records.detections),
        "detections": sum(t >= boundary for t in records.detections),
        "retrains": sum(r.created_at >= boundary for r in records.runs),
        "promotions": sum((a.at or 0.0) >= boundary for a in records.moves),
        "accuracy_before": m.share(correct, slice(0, start)) if start else None,
        "accuracy": m.share(correct, slice(0, len(correct))),
        "versions_served": sorted({v for v in served.versions if v}, key=_version_key),
        "labels_joined": records.labels_joined,
        "labels_unmatched": records.labels_unmatched,
        "worse_promotions": sum(j.worse for j in judged),
        "judgements": [j.__dict__ for j in judged],
    }
    if stream.kind in MODERATE_KINDS and ladder is not None:
        row.update(episode(stream, correct, times, served.versions, records, ladder, boundary))
        row["rows_over_reference_with_delay"] = _ratio(
            row["rows_to_recovery"], row["reference_rows"], label_delay
        )
    return row


def episode(
    stream: Stream,
    correct: np.ndarray,
    times: np.ndarray,
    versions: list[str],
    records: Records,
    ladder: m.Ladder,
    boundary: float,
) -> dict[str, Any]:
    start, at = stream.drift_start or 0, stream.drift_at or 0
    end = stream.drift_end or at
    detected = next((t for t in records.detections if t >= boundary), None)
    changes = m.switches(versions, start)
    recovered = m.recovery_row(correct, ladder, [s.row for s in changes])
    after_from = recovered
    if after_from is None:  # not recovered: "after" is the last change with rows enough, if any
        late = [s.row for s in changes if len(correct) - s.row >= m.MIN_AFTER_ROWS]
        after_from = late[-1] if late else None
    after = slice(len(correct) if after_from is None else after_from, len(correct))
    live_after = m.share(correct, after)
    # with no "after", the reference is shown on the settled new regime
    shown = after if after_from is not None else slice(end, len(correct))
    reference_rows = None
    if recovered is not None and live_after is not None:
        reference_rows = ladder.rows_needed(after, live_after)
    rows = None if recovered is None else max(0, recovered - at)
    return {
        "detected": detected is not None,
        "rows_to_detection": None if detected is None else max(0, m.rows_at(times, detected) - at),
        "seconds_to_detection": None if detected is None else _round(detected - times[at]),
        "rows_to_first_new_version": max(0, changes[0].row - at) if changes else None,
        "recovered": recovered is not None,
        "recovery_version": versions[recovered] if recovered is not None else None,
        "rows_to_recovery": rows,
        "seconds_to_recovery": None
        if recovered is None
        else _round(max(0.0, times[recovered] - times[at])),
        "accuracy_during": m.share(correct, slice(start, after.start)),
        "accuracy_after": live_after,
        "after_from_row": after_from,
        "reference_accuracy": round(ladder.target(shown), 4),
        "reference_target_rows": ladder.target_rows,
        "reference_rows": reference_rows,
        "rows_over_reference": _ratio(rows, reference_rows, 0),
        "reference_ladder": {
            str(k): round(ladder.accuracy(k, shown), 4) for k in sorted(ladder.correct)
        },
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    episodes = [r for r in rows if r["kind"] in MODERATE_KINDS]
    stationary = [r for r in rows if r["kind"] == "stationary"]
    harmless = [r for r in rows if r["kind"] == "harmless"]
    judged = [j for r in rows for j in r["judgements"]]
    return {
        "episodes": len(episodes),
        "episodes_recovered": sum(bool(r.get("recovered")) for r in episodes),
        "median_rows_to_recovery": m.median_or_none([r.get("rows_to_recovery") for r in episodes]),
        "median_rows_to_recovery_over_reference": m.median_or_none(
            [r.get("rows_over_reference") for r in episodes]
        ),
        "worse_promotions": sum(r["worse_promotions"] for r in rows),
        "stationary_retrains": sum(r["retrains"] for r in stationary),
        "harmless_shift_promotions": sum(r["promotions"] for r in harmless),
        "median_rows_over_reference_with_delay": m.median_or_none(
            [r.get("rows_over_reference_with_delay") for r in episodes]
        ),
        "median_seconds_to_recovery": m.median_or_none(
            [r.get("seconds_to_recovery") for r in episodes]
        ),
        "median_rows_to_detection": m.median_or_none(
            [r.get("rows_to_detection") for r in episodes]
        ),
        "episodes_detected": sum(bool(r.get("detected")) for r in episodes),
        "retrain_attempts": sum(r["retrains"] for r in episodes),
        "promotions_judged": sum(j["p_value"] is not None for j in judged),
        "promotions_unjudged": sum(j["p_value"] is None for j in judged),
        "stationary_promotions": sum(r["promotions"] for r in stationary),
        "stationary_detections": sum(r["detections"] for r in stationary),
        "harmless_shift_retrains": sum(r["retrains"] for r in harmless),
        "alarms_before_drift": sum(r["alarms_before_drift"] for r in rows),
        "failed_requests": sum(r["failed_requests"] for r in rows),
        "failed_label_calls": sum(r["failed_label_calls"] for r in rows),
    }


def _ratio(rows: int | None, reference: int | None, delay: int) -> float | None:
    if rows is None or not reference:
        return None
    return round(rows / (reference + delay), 3)


def _round(value: float) -> float:
    return round(float(value), 2)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (10**9, version)
