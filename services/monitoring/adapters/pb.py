"""Conversions between the monitor's domain objects and their protobuf messages.

Both adapters (the event handler and the gRPC servicer) speak protobuf through these only.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.monitoring.v1 import monitoring_pb2
from driftloop.services.monitoring.core.drift import FeatureDrift
from driftloop.services.monitoring.core.history import HistoryEntry
from driftloop.services.monitoring.core.monitor import DriftDecision
from driftloop.services.monitoring.core.regression import ErrorPoint
from driftloop.services.monitoring.core.report import (
    ColumnDistribution,
    DriftReport,
    EpisodeState,
    PerformanceSummary,
)
from driftloop.shared.errors import InvalidInput
from driftloop.shared.records import ipc_to_table
from driftloop.shared.timestamps import timestamp


def prediction_frame(arrow_ipc: bytes) -> pd.DataFrame:
    """The rows of a PredictionLog event (Arrow IPC) as a DataFrame; InvalidInput for bytes
    that are no readable prediction log."""
    table = ipc_to_table(arrow_ipc)
    try:
        return table.to_pandas()
    except (pa.ArrowException, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"prediction log rows cannot be read: {exc}") from exc


def feature_drift_pb(f: FeatureDrift) -> events_pb2.FeatureDrift:
    return events_pb2.FeatureDrift(
        feature=f.feature,
        test=f.test,
        statistic=f.statistic,
        p_value=f.p_value,
        threshold=f.threshold,
        drifted=f.drifted,
    )


def drift_detected_pb(d: DriftDecision) -> events_pb2.DriftDetected:
    return events_pb2.DriftDetected(
        model=d.model,
        version=d.version,
        episode_id=d.episode_id,
        features=[feature_drift_pb(f) for f in d.features],
        drift_share=d.drift_share,
        window_start=timestamp(d.window_start),
        window_end=timestamp(d.window_end),
        live_rows=d.live_rows,
        reference_rows=d.reference_rows,
        reasons=list(d.reasons),
        partitions=[partition for partition, _ in d.partitions],
    )


def drift_report_pb(r: DriftReport) -> monitoring_pb2.DriftReport:
    report = monitoring_pb2.DriftReport(
        model=r.model,
        version=r.version,
        window_rows=r.window_rows,
        reference_rows=r.reference_rows,
        features=[feature_drift_pb(f) for f in r.features],
        drift_share=r.drift_share,
        drifted=r.drifted,
        open_episode_id=r.open_episode_id,
        rows_seen=r.rows_seen,
        distributions=[distribution_pb(d) for d in r.distributions],
        performance=performance_pb(r.performance),
        episode=episode_pb(r.episode),
        rows_ignored=r.rows_ignored,
    )
    for name, value in (
        ("evaluated_at", r.evaluated_at),
        ("window_start", r.window_start),
        ("window_end", r.window_end),
    ):
        if value is not None:
            getattr(report, name).CopyFrom(timestamp(value))
    return report


def distribution_pb(d: ColumnDistribution) -> monitoring_pb2.ColumnDistribution:
    return monitoring_pb2.ColumnDistribution(
        column=d.column,
        kind=d.kind,
        bin_edges=d.bin_edges,
        categories=d.categories,
        reference_shares=d.reference_shares,
        live_shares=d.live_shares,
        reference_count=d.reference_count,
        live_count=d.live_count,
    )


def performance_pb(p: PerformanceSummary) -> monitoring_pb2.Performance:
    return monitoring_pb2.Performance(
        labelled_rows=p.labelled_rows,
        unmatched_labels=p.unmatched_labels,
        duplicate_labels=p.duplicate_labels,
        window_rows=p.window_rows,
        live_accuracy=p.live_accuracy or 0.0,
        live_f1_macro=p.live_f1_macro or 0.0,
        has_reference=p.reference_accuracy is not None or p.reference_mae is not None,
        reference_accuracy=p.reference_accuracy or 0.0,
        reference_f1_macro=p.reference_f1_macro or 0.0,
        reference_source=p.reference_source,
        pending_predictions=p.pending_predictions,
        task=p.task,
        invalid_labels=p.invalid_labels,
        live_mae=p.live_mae or 0.0,
        live_rmse=p.live_rmse or 0.0,
        reference_mae=p.reference_mae or 0.0,
        reference_rmse=p.reference_rmse or 0.0,
        error_over_time=[error_point_pb(e) for e in p.error_over_time],
    )


def error_point_pb(e: ErrorPoint) -> monitoring_pb2.ErrorPoint:
    return monitoring_pb2.ErrorPoint(at=timestamp(e.at), rows=e.rows, mae=e.mae)


def episode_pb(e: EpisodeState) -> monitoring_pb2.EpisodeState:
    state = monitoring_pb2.EpisodeState(
        episode_id=e.episode_id,
        open=e.open,
        cooldown_rows_left=e.cooldown_rows_left,
        reopens_in_s=e.reopens_in_s,
    )
    if e.opened_at is not None:
        state.opened_at.CopyFrom(timestamp(e.opened_at))
    return state


def history_entry_pb(e: HistoryEntry) -> monitoring_pb2.DriftHistoryEntry:
    return monitoring_pb2.DriftHistoryEntry(
        event=drift_detected_pb(e.decision),
        decided_at=timestamp(e.decision.decided_at),
        event_id=e.event_id,
        correlation_id=e.correlation_id,
    )
