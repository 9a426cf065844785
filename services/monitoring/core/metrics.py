"""Prometheus metrics of the monitor: latest test results per feature, decisions, rows seen.

Updated by the event handler after each prediction log and label batch it observes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from driftloop.services.monitoring.core.fleet import fleet_of
from driftloop.services.monitoring.core.monitor import DriftDecision, ModelMonitor

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


def record_monitor(monitor: ModelMonitor) -> None:
    """A monitor's latest tests, without building its report (that costs histograms of every
    column). A fleet's partition only sets its drift share: per-column series of thousands of
    partitions would outweigh the monitors (their reports show the tests)."""
    latest = monitor.latest
    DRIFT_SHARE.labels(monitor.model).set(latest.drift_share if latest else 0.0)
    if fleet_of(monitor.model) is not None:
        return
    evidence = monitor.performance.evidence(monitor.policy.alpha)
    for f in (*(latest.features if latest else ()), *evidence):
        DRIFT_P_VALUE.labels(monitor.model, f.feature).set(f.p_value)
        DRIFT_STATISTIC.labels(monitor.model, f.feature).set(f.statistic)


def record_decision(decision: DriftDecision) -> None:
    DRIFT_EVENTS.labels(decision.model).inc()
