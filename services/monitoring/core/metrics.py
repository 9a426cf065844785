"""Prometheus metrics of the monitor: latest test results per feature, decisions, rows seen.

Updated by the event handler after each observed prediction log.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from driftloop.services.monitoring.core.monitor import DriftDecision, DriftReport

DRIFT_P_VALUE = Gauge(
    "driftloop_monitoring_drift_p_value",
    "p-value of the latest drift test",
    ["model", "feature"],
)
DRIFT_STATISTIC = Gauge(
    "driftloop_monitoring_drift_statistic",
    "Statistic (KS D or chi-squared) of the latest test",
    ["model", "feature"],
)
DRIFT_SHARE = Gauge(
    "driftloop_monitoring_drift_share", "Share of tested columns that drifted", ["model"]
)
DRIFT_EVENTS = Counter(
    "driftloop_monitoring_drift_events_total", "DriftDetected decisions published", ["model"]
)
LABELS_RECEIVED = Counter(
    "driftloop_monitoring_labels_received_total", "Labels received on driftloop.labels", ["model"]
)
LABELS_INVALID = Counter(
    "driftloop_monitoring_labels_invalid_total",
    "A regressor's labels that were not finite decimal numbers (ignored)",
    ["model"],
)
ROWS_OBSERVED = Counter(
    "driftloop_monitoring_rows_observed_total", "Prediction rows received", ["model"]
)


def record_report(report: DriftReport) -> None:
    for f in report.features:
        DRIFT_P_VALUE.labels(report.model, f.feature).set(f.p_value)
        DRIFT_STATISTIC.labels(report.model, f.feature).set(f.statistic)
    DRIFT_SHARE.labels(report.model).set(report.drift_share)


def record_decision(decision: DriftDecision) -> None:
    DRIFT_EVENTS.labels(decision.model).inc()
