"""Settings of the serving service (env prefix DRIFTLOOP_SERVING_).

Shared settings (ports, broker, object store) come from CommonSettings; these tune serving only.
"""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop.services.serving.core.batching import BatchPolicy
from driftloop.shared.settings import ServiceSettings


def default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ServingSettings(ServiceSettings):
    """How serving reconciles with the registry and logs predictions."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_SERVING_", env_nested_delimiter="__", extra="forbid"
    )

    reconcile_interval_s: float = Field(default=5.0, gt=0)
    """Seconds between two reconciliations with the registry's production versions."""
    reconcile_timeout_s: float = Field(default=3.0, gt=0)
    """Deadline of each registry call made while reconciling."""
    log_queue_rows: int = Field(default=50_000, ge=1)
    """Prediction-log rows held in memory at most; beyond this new rows are dropped (counted)."""
    log_batch_rows: int = Field(default=1_000, ge=1)
    """Rows per PredictionLog message; a full batch is flushed at once."""
    log_flush_interval_s: float = Field(default=0.1, gt=0)
    """Seconds between flushes of partially filled prediction-log batches."""
    max_batch_size: int = Field(default=1024, ge=1)
    """Rows per micro-batched predict call at most; 1 turns micro-batching off. Requests with
    this many rows or more are scored on their own."""
    max_batch_wait_ms: float = Field(default=0.0, ge=0)
    """How long the first request of a micro-batch waits for others; 0 is adaptive: a batch
    holds the requests that arrived while the previous predict call ran, and a lone request
    waits for nothing."""
    max_request_rows: int = Field(default=100_000, ge=1)
    """Rows one ModelInfer request may hold; more get RESOURCE_EXHAUSTED."""
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    """Bytes one ModelInfer request may hold: gRPC refuses a larger one (RESOURCE_EXHAUSTED)
    before reading it. 100,000 rows of 20 FP64 features fit; a V2 request is parsed whole before
    anything can be checked, so this bounds what one request can cost."""
    shadow_queue_rows: int = Field(default=20_000, ge=1)
    """Live rows waiting for the shadow version at most; beyond this the shadow skips rows
    (counted in driftloop_serving_shadow_rows_dropped_total), requests are never slowed."""
    kafka_inference: bool = True
    """Answer V2 requests published to driftloop.inference.requests (protobuf or JSON) on
    driftloop.inference.responses, keyed by request id."""
    instance: str = ""
    """Name of this serving replica in ModelDeployed/DeploymentFailed events; empty means
    hostname:pid (each worker's own pid). With several workers a set name gets `/w<index>`."""
    workers: int = Field(default=1, ge=1)
    """Serving processes sharing the gRPC port (SO_REUSEPORT; the kernel spreads connections).
    Above 1, `python -m driftloop.services.serving` starts this many workers and serves no
    request itself: each worker loads and swaps every promoted version on its own, the Kafka
    inference partitions are split between them, and the metrics port shows all of them
    (prometheus-client multiprocess mode). A worker that dies takes the others down, so the
    supervisor restarts serving as a whole. Needs a fixed gRPC port (not 0)."""

    compiled_form: bool = True
    """Serve all-numeric models through ONNX Runtime (a graph skl2onnx derives from the verified
    pipeline at deploy time), when it agrees with scikit-learn within 1e-4 on every class
    probability, and on every label (a regressor: every prediction within 1e-4 relative), on the
    version's reference sample (the training values its profile keeps) plus rows around the
    training data and a row of missing values (those alone, logged, when the version has no
    readable profile); else, and with false, scikit-learn scores every request."""
    model_memory_mb: float = Field(default=0.0, ge=0)
    """Memory budget of the loaded partition models (FLEET/COLUMN=VALUE) of each serving process
    (each worker holds its own), in MB; 0 = no limit. Partition models load on their first
    request, and the least recently used ones are unloaded while the loaded ones' estimated
    memory exceeds the budget; plain models and fleets' global models load at start, outside
    it. A model's memory is estimated as its skops artifact's size, plus 0.75 MB and 2.5x its
    ONNX graph's size when ONNX Runtime serves it: measured against the RSS growth of loading
    ridge, random forest and gradient boosting regressors, this errs high (core/model_cache.py)."""
    artifact_cache_mb: float = Field(default=32.0, ge=0)
    """Memory for the artifacts of recently loaded partition models, zlib-compressed, in MB
    (each worker holds its own); 0 = off. A partition model evicted under model_memory_mb and
    asked for again loads from here, without the object store round trip; the bytes' sha256 is
    checked against the registry's again on every load. A gradient boosting partition model's
    394 KiB artifact takes ~50 KiB here (its loaded pipeline ~205 KiB): 32 MB keeps ~650."""
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The event loop serving runs on: uvloop (faster loop turns: lower latency and more
    requests per second, see the README's serving table) or Python's standard asyncio loop."""

    def batch_policy(self) -> BatchPolicy | None:
        """The micro-batching policy, or None when max_batch_size is 1 (off)."""
        if self.max_batch_size <= 1:
            return None
        return BatchPolicy(self.max_batch_size, self.max_batch_wait_ms / 1000.0)

    def model_memory_bytes(self) -> int:
        """model_memory_mb in bytes (0: no limit)."""
        return int(self.model_memory_mb * 1024 * 1024)

    def artifact_cache_bytes(self) -> int:
        """artifact_cache_mb in bytes (0: off)."""
        return int(self.artifact_cache_mb * 1024 * 1024)

    def instance_name(self, worker: int | None = None) -> str:
        """This process's name in deployment events; `worker` is its index among workers."""
        if not self.instance:
            return default_instance()
        return self.instance if worker is None else f"{self.instance}/w{worker}"
