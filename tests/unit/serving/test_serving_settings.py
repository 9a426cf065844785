"""Serving settings: defaults from the brief, env overrides, unknown keys refused."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from driftloop.services.serving.settings import ServingSettings

pytestmark = pytest.mark.unit


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServingSettings()
    assert (
        settings.reconcile_interval_s,
        settings.log_queue_rows,
        settings.log_batch_rows,
        settings.log_flush_interval_s,
    ) == (5.0, 50_000, 1_000, 0.1)
    assert settings.instance_name().endswith(f":{os.getpid()}")
    monkeypatch.setenv("DRIFTLOOP_SERVING_LOG_BATCH_ROWS", "7")
    monkeypatch.setenv("DRIFTLOOP_SERVING_INSTANCE", "pod-a")
    settings = ServingSettings()
    assert (settings.log_batch_rows, settings.instance_name()) == (7, "pod-a")


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        ServingSettings(log_queue_rows=0)
    with pytest.raises(ValidationError):
        ServingSettings(not_a_setting=1)  # type: ignore[call-arg]


def test_the_partition_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServingSettings().model_memory_bytes() == 0  # no limit
    monkeypatch.setenv("DRIFTLOOP_SERVING_MODEL_MEMORY_MB", "1.5")
    assert ServingSettings().model_memory_bytes() == 1_572_864
    with pytest.raises(ValidationError):
        ServingSettings(model_memory_mb=-1)
