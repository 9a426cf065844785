"""Prometheus metrics of the serving service.

Defined once here so the core and the adapters count into the same series.
"""

from __future__ import annotations

from prometheus_client import Counter

INFER_REQUESTS = Counter(
    "driftloop_serving_infer_requests_total", "ModelInfer requests answered", ["model", "version"]
)
INFER_ROWS = Counter(
    "driftloop_serving_infer_rows_total", "Rows predicted by ModelInfer", ["model", "version"]
)
SWAPS = Counter("driftloop_serving_swaps_total", "Production versions swapped in", ["model"])
DEPLOY_FAILURES = Counter(
    "driftloop_serving_deploy_failures_total",
    "Deployments that failed (old version kept)",
    ["model"],
)
PREDICTION_LOGS_DROPPED = Counter(
    "driftloop_serving_prediction_log_rows_dropped_total",
    "Prediction-log rows dropped instead of blocking requests",
    ["reason"],
)
