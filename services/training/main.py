"""Entry point of the training service: wiring only (settings, stores, registry client, core,
consumers of drift and dataset events, worker, gRPC server)."""

from __future__ import annotations

import asyncio

from driftloop.protos.training.v1 import training_pb2_grpc
from driftloop.services.training.adapters.grpc import ROLES, SERVICE_NAME, TrainingServicer
from driftloop.services.training.adapters.kafka import TrainingEvents
from driftloop.services.training.adapters.registry import TrainingRegistry
from driftloop.services.training.core.executor import DataWait, RunExecutor
from driftloop.services.training.core.reproduce import Reproducer
from driftloop.services.training.core.runs import RunStore
from driftloop.services.training.core.schedule import Scheduler
from driftloop.services.training.core.training import AutoTrainPolicy, Training
from driftloop.services.training.settings import TrainingSettings
from driftloop.shared import logging, manifest, runtime
from driftloop.shared.bus import topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.grpc.server import ServiceBinding
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings


def main() -> None:
    common = CommonSettings()
    settings = TrainingSettings()
    logging.configure("training", json=common.log_json, level=common.log_level)
    asyncio.run(_serve(common, settings))


async def _serve(common: CommonSettings, settings: TrainingSettings) -> None:
    store = open_object_store(common)
    runs = RunStore(settings.database(common.data_dir))
    # built inside the running loop: aiokafka's producer needs one
    client = RegistryClient(common, timeout=settings.registry_timeout_s)
    registry = TrainingRegistry(client)
    wait = DataWait(
        min_rows_after_drift=settings.min_rows_after_drift,
        max_wait_seconds=settings.drift_data_wait_s,
        poll_seconds=settings.poll_seconds,
    )
    executor = RunExecutor(
        runs,
        store,
        registry,
        wait=wait,
        fit_threads=settings.fit_threads,
        max_partitions=settings.max_partitions,
    )
    training = Training(
        runs,
        registry,
        executor,
        auto=AutoTrainPolicy(min_rows=settings.auto_train_min_rows),
        poll_seconds=settings.poll_seconds,
        workers=settings.workers,
    )
    scheduler = Scheduler(
        training,
        runs,
        registry,
        lambda dataset: _head_version(store, dataset),
        poll_seconds=settings.schedule_poll_s,
    )
    handlers = TrainingEvents(training)
    publisher = EventPublisher(common.kafka_connection(), "training")
    consumers = [
        EventConsumer(
            bootstrap=common.kafka_connection(),
            group="training",
            topic_names=[topics.DRIFT],
            publisher=publisher,
            on_event=handlers.on_drift,
            group_membership=common.consumer_group_membership,
        ),
        EventConsumer(
            bootstrap=common.kafka_connection(),
            group="training-auto",
            topic_names=[topics.RECORDS_VALIDATED],
            publisher=publisher,
            on_event=handlers.on_validated,
            group_membership=common.consumer_group_membership,
        ),
    ]
    binding = ServiceBinding(
        add=training_pb2_grpc.add_TrainingServiceServicer_to_server,
        servicer=TrainingServicer(training, Reproducer(store, registry)),
        full_name=SERVICE_NAME,
        roles=ROLES,
    )

    async def close() -> None:
        await client.close()
        runs.close()

    await runtime.serve(
        "training",
        common,
        [binding],
        publisher=publisher,
        consumers=consumers,
        background=[training.work, scheduler.run],
        on_stop=close,
    )


def _head_version(store: ObjectStore, dataset: str) -> int:
    head = manifest.manifest_head(store, dataset)
    return 0 if head is None else head.version
