"""Settings of the serving service (env prefix DRIFTLOOP_SERVING_).

Shared settings (ports, broker, object store) come from CommonSettings; these tune serving only.
"""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

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
    instance: str = ""
    """Name of this serving replica in ModelDeployed/DeploymentFailed events; empty means
    hostname:pid."""

    def instance_name(self) -> str:
        return self.instance or default_instance()
