"""Prometheus metrics of the serving service.

Defined once here so the core and the adapters count into the same series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INFER_REQUESTS = Counter(
    "driftloop_serving_infer_requests_total", "ModelInfer requests answered", ["model", "version"]
)
INFER_ROWS = Counter(
    "driftloop_serving_infer_rows_total", "Rows predicted by ModelInfer", ["model", "version"]
)
KAFKA_REQUESTS = Counter(
    "driftloop_serving_kafka_requests_total",
    "Requests answered from driftloop.inference.requests, by outcome (OK or a gRPC status name)",
    ["outcome"],
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
SHADOW_ROWS = Counter(
    "driftloop_serving_shadow_rows_total",
    "Live rows scored again by the model's shadow version (answers not returned)",
    ["model", "version"],
)
SHADOW_ROWS_DROPPED = Counter(
    "driftloop_serving_shadow_rows_dropped_total",
    "Live rows the shadow did not score (queue full, or the shadow failed on them)",
    ["model", "reason"],
)
SHADOW_VERSION = Gauge(
    "driftloop_serving_shadow_version",
    "Shadow version this replica runs beside production (0: none)",
    ["model"],
)
BATCH_ROWS = Histogram(
    "driftloop_serving_batch_rows",
    "Rows per micro-batched predict call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
MODEL_VERSION = Gauge(
    "driftloop_serving_model_version",
    "Production version this replica serves (registry version number)",
    ["model"],
)
DEPLOY_SECONDS = Histogram(
    "driftloop_serving_deploy_seconds",
    "Fetch, hash check, load, warm-up and swap of a new production version",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def record_swap(model: str, version: str, seconds: float) -> None:
    """Count a swap and show the version now served (non-numeric versions show as -1)."""
    SWAPS.labels(model).inc()
    MODEL_VERSION.labels(model).set(float(version) if version.isdigit() else -1.0)
    DEPLOY_SECONDS.labels(model).observe(seconds)
