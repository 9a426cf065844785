"""Conversions between the monitor's domain objects and their protobuf messages.

Both adapters (the event handler and the gRPC servicer) speak protobuf through these only.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from driftloop.events.v1 import events_pb2
from driftloop.monitoring.v1 import monitoring_pb2
from driftloop.services.monitoring.drift import FeatureDrift
from driftloop.services.monitoring.monitor import DriftDecision, DriftReport


def timestamp(epoch_seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(epoch_seconds * 1e9))
    return ts


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
    )
    if r.evaluated_at is not None:
        report.evaluated_at.CopyFrom(timestamp(r.evaluated_at))
    return report
