"""Serving workers: the --worker flag, the Kafka partition split, instance names, the setting,
and the ServerMetadata trailer naming the worker."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters.grpc import WORKER_METADATA, InferenceServicer
from driftloop.services.serving.adapters.kafka_inference import owns
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.prediction_log import PredictionLogger
from driftloop.services.serving.core.slot import ModelSlot
from driftloop.services.serving.settings import ServingSettings
from driftloop.services.serving.workers import worker_argv, worker_index
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit


def test_the_worker_flag_round_trips_and_its_absence_means_no_worker() -> None:
    assert worker_index([]) is None
    assert worker_index(worker_argv(3)[3:]) == 3
    for bad in (["--worker"], ["--worker", "x"], ["--worker", "-1"]):
        with pytest.raises(InvalidInput):
            worker_index(bad)


@pytest.mark.parametrize("partitions", [1, 3, 7])
@pytest.mark.parametrize("workers", [2, 3, 5])
def test_every_partition_belongs_to_exactly_one_worker(partitions: int, workers: int) -> None:
    for p in range(partitions):
        assert sum(owns(p, w, workers) for w in range(workers)) == 1


def test_instance_names_differ_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_SERVING_INSTANCE", "pod-a")
    settings = ServingSettings()
    assert settings.instance_name() == "pod-a"
    assert {settings.instance_name(0), settings.instance_name(1)} == {"pod-a/w0", "pod-a/w1"}


def test_workers_default_to_one_and_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServingSettings().workers == 1
    monkeypatch.setenv("DRIFTLOOP_SERVING_WORKERS", "0")
    with pytest.raises(ValidationError):
        ServingSettings()


class _Context:
    def __init__(self) -> None:
        self.trailer: Any = None

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailer = metadata


async def _metadata_trailer(worker: int | None) -> Any:
    async def publish(*_: Any) -> None:
        return None

    service = InferenceService(ModelSlot(), PredictionLogger(publish))
    context = _Context()
    reply = await InferenceServicer(service, lambda: True, worker=worker).ServerMetadata(
        pb.ServerMetadataRequest(), context
    )
    assert reply.name == "driftloop"
    return context.trailer


async def test_server_metadata_names_the_worker_only_when_there_are_workers() -> None:
    assert await _metadata_trailer(None) is None
    assert await _metadata_trailer(1) == ((WORKER_METADATA, "1"),)
