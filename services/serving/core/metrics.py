"""Prometheus metrics of the serving service.

Defined once here so the core and the adapters count into the same series.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

PARTITIONS = "partitions"
"""The `version` label of the rows partition models answered (each partition has its own)."""

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
    """Count a swap and show the version now served (non-numeric versions show as -1; a
    partition model's swaps count under its fleet, whose version gauge they leave alone)."""
    label = series(model)
    SWAPS.labels(label).inc()
    if label == model:
        MODEL_VERSION.labels(model).set(float(version) if version.isdigit() else -1.0)
    DEPLOY_SECONDS.labels(label).observe(seconds)


# partition models (fleets): lazy loads under DRIFTLOOP_SERVING_MODEL_MEMORY_MB, labelled by
# fleet so that 16,000 partitions make a handful of series, not 16,000 of each
PARTITION_HITS = Counter(
    "driftloop_serving_partition_cache_hits_total",
    "Requests for a partition model that found it loaded",
    ["fleet"],
)
PARTITION_MISSES = Counter(
    "driftloop_serving_partition_cache_misses_total",
    "Requests for a partition model that had to wait for its load (several may share one load)",
    ["fleet"],
)
PARTITION_EVICTIONS = Counter(
    "driftloop_serving_partition_evictions_total",
    "Partition models unloaded, least recently used first, to stay within the memory budget",
    ["fleet"],
)
PARTITION_LOAD_FAILURES = Counter(
    "driftloop_serving_partition_load_failures_total",
    "Lazy loads that failed (the rows were answered by the fleet's global model, if any)",
    ["fleet"],
)
PARTITION_LOAD_SECONDS = Histogram(
    "driftloop_serving_partition_load_seconds",
    "Lazy load of a partition model on its first request: registry lookup, fetch, hash check, "
    "load, warm-up and swap",
    ["fleet"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PARTITION_MODELS_LOADED = Gauge(
    "driftloop_serving_partition_models_loaded",
    "Partition models loaded in memory now",
    multiprocess_mode="livesum",
)
PARTITION_MODEL_BYTES = Gauge(
    "driftloop_serving_partition_model_bytes",
    "Estimated memory of the loaded partition models (model_cache.estimated_bytes)",
    multiprocess_mode="livesum",
)
PARTITION_MEMORY_BUDGET_BYTES = Gauge(
    "driftloop_serving_partition_memory_budget_bytes",
    "DRIFTLOOP_SERVING_MODEL_MEMORY_MB of each serving process, in bytes (0: no limit)",
    multiprocess_mode="max",
)

ARTIFACT_CACHE_HITS = Counter(
    "driftloop_serving_artifact_cache_hits_total",
    "Loads whose artifact bytes came from the compressed artifact cache, not the object store",
)
ARTIFACT_CACHE_MISSES = Counter(
    "driftloop_serving_artifact_cache_misses_total",
    "Loads whose artifact bytes had to be fetched from the object store",
)
ARTIFACT_CACHE_BYTES = Gauge(
    "driftloop_serving_artifact_cache_bytes",
    "Compressed artifact bytes held (DRIFTLOOP_SERVING_ARTIFACT_CACHE_MB)",
    multiprocess_mode="livesum",
)
ARTIFACT_CACHE_BUDGET_BYTES = Gauge(
    "driftloop_serving_artifact_cache_budget_bytes",
    "DRIFTLOOP_SERVING_ARTIFACT_CACHE_MB of each serving process, in bytes (0: off)",
    multiprocess_mode="max",
)


def series(model: str) -> str:
    """The `model` label of per-model series: a partition model counts under its fleet."""
    return model.split("/", 1)[0]  # a served name is checked: its fleet precedes the first /


def show_shadow_version(model: str, version: str) -> None:
    """Show the shadow version a model runs (empty: none; non-numeric: -1); partition models
    have no such gauge (one series per partition would not scale)."""
    if series(model) != model:
        return
    shown = float(version) if version.isdigit() else -1.0 if version else 0.0
    SHADOW_VERSION.labels(model).set(shown)


def model_version(loaded: Any) -> tuple[str, str]:
    """The (model, version) labels of a loaded model's series: a partition model's rows count
    under (its fleet, "partitions")."""
    model = series(loaded.model)
    return (model, loaded.version) if model == loaded.model else (model, PARTITIONS)
