"""Prometheus metrics of the training service: how long runs take and how they end.

The executor calls `record_run` once per run that reached an outcome (requeued runs are not done).
"""

from __future__ import annotations

import time

from prometheus_client import Histogram

from driftloop.services.training.core.domain import Run

RUN_SECONDS = Histogram(
    "driftloop_training_run_seconds",
    "Wall time of a training run from start to its outcome (data wait, fit, evaluation, register)",
    ["model", "trigger", "outcome"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)


def record_run(run: Run, outcome: str, started: float) -> None:
    """Observe one run; `started` is the time.monotonic() taken when it started."""
    RUN_SECONDS.labels(run.model, run.trigger, outcome).observe(time.monotonic() - started)
