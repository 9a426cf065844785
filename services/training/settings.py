"""Settings of the training service (env prefix DRIFTLOOP_TRAINING_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop.shared.fleet import DEFAULT_MAX_PARTITIONS
from driftloop.shared.settings import ServiceSettings


class TrainingSettings(ServiceSettings):
    """When training runs start and how they wait for data."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_TRAINING_", env_nested_delimiter="__", extra="forbid"
    )

    db_path: Path | None = None
    """SQLite file of training runs; unset means <data_dir>/training.db."""
    auto_train_min_rows: int = 1000
    """Train a model with no production version and no runs once its dataset has this many
    curated rows."""
    drift_data_wait_s: float = 60.0
    """How long a drift run waits for min_rows_after_drift rows ingested after the drift was
    detected, before it trains on the most recent rows instead."""
    min_rows_after_drift: int = 500
    """Rows ingested after the drift was detected (the monitor's window end) that a drift run
    waits for and trains on, so the new model learns only the new regime."""
    poll_seconds: float = 0.5
    """How often the worker checks the queue (besides being woken) and a drift run re-reads
    the dataset manifest while it waits for data."""
    registry_timeout_s: float = 30.0
    """Deadline of each call to the registry."""
    schedule_poll_s: float = 10.0
    """How often the schedule trigger checks models whose spec sets a schedule (a due slot
    starts at most this late)."""

    fit_threads: int = Field(default=1, ge=1)
    """Native threads (OpenMP, BLAS) one fit may use. 1 by default: training shares the machine
    with the other services, and an OpenMP fit that waits on busy cores spins instead of
    sleeping (a 0.1 s gradient-boosting fit took 40 s on a loaded 2-core machine)."""

    workers: int = Field(default=1, ge=1, le=16)
    """Runs trained at the same time (each fits in its own thread). A fleet's partition runs
    spend part of their time on registry calls and artifact writes, so 2 keeps one core busy
    fitting while the other run waits; more than the cores only adds contention."""
    max_partitions: int = Field(default=DEFAULT_MAX_PARTITIONS, ge=1)
    """A fleet whose partition_by columns have more distinct values than this in the curated
    data is refused, naming the columns and the count, before any model is created."""

    def database(self, data_dir: Path) -> Path:
        return self.db_path if self.db_path is not None else data_dir / "training.db"
