"""Entry point of the serving service: wiring only.

Builds the slot, deployer, prediction logger, Kafka consumer, reconciler and V2 servicer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from driftloop.services.serving.core import InferenceService
from driftloop.services.serving.deployment import Deployer
from driftloop.services.serving.events import (
    ModelEvents,
    model_events_consumer,
    prediction_log_publisher,
)
from driftloop.services.serving.grpc_api import InferenceServicer, RegistryReader, binding
from driftloop.services.serving.inference_events import KafkaInference, kafka_inference_consumer
from driftloop.services.serving.prediction_log import PredictionLogger
from driftloop.services.serving.reconcile import Reconciler
from driftloop.services.serving.settings import ServingSettings
from driftloop.services.serving.shadow import ShadowScorer
from driftloop.services.serving.slot import ModelSlot
from driftloop.shared import artifacts, logging, runtime
from driftloop.shared.bus import EventPublisher
from driftloop.shared.objectstore import open_object_store
from driftloop.shared.settings import CommonSettings


def main() -> None:
    common = CommonSettings()
    settings = ServingSettings()
    logging.configure("serving", json=common.log_json, level=common.log_level)
    asyncio.run(run(common, settings))


async def run(common: CommonSettings, settings: ServingSettings) -> None:
    """Build the parts inside the event loop (aiokafka's producer needs a running loop)."""
    store = open_object_store(common)

    async def fetch(key: str) -> bytes:
        return await asyncio.to_thread(store.get, key)

    async def load(data: bytes, sha256: str) -> Any:
        return await asyncio.to_thread(artifacts.load_model, data, sha256)

    publisher = EventPublisher(common.bootstrap(), "serving")
    slot = ModelSlot()
    deployer = Deployer(slot, fetch, load)
    logger = PredictionLogger(
        prediction_log_publisher(publisher),
        max_rows=settings.log_queue_rows,
        batch_rows=settings.log_batch_rows,
        flush_interval_s=settings.log_flush_interval_s,
    )
    shadow_logger = PredictionLogger(
        prediction_log_publisher(publisher, shadow=True),
        max_rows=settings.log_queue_rows,
        batch_rows=settings.log_batch_rows,
        flush_interval_s=settings.log_flush_interval_s,
    )
    shadow = ShadowScorer(slot, shadow_logger, max_rows=settings.shadow_queue_rows)
    model_events = ModelEvents(deployer, publisher, settings.instance_name())
    registry = RegistryReader(common, settings.reconcile_timeout_s)
    reconciler = Reconciler(
        deployer,
        model_events,
        registry,
        interval_s=settings.reconcile_interval_s,
        shadows=registry,
    )
    inference = InferenceService(
        slot,
        logger,
        batching=settings.batch_policy(),
        max_request_rows=settings.max_request_rows,
        shadow=shadow,
    )
    servicer = InferenceServicer(inference, reconciler.first_done.is_set)
    consumers = [model_events_consumer(common, publisher, model_events)]
    if settings.kafka_inference:
        kafka = KafkaInference(inference, publisher)
        consumers.append(kafka_inference_consumer(common, publisher, kafka))
    await runtime.serve(
        "serving",
        common,
        [binding(servicer)],
        publisher=publisher,
        consumers=consumers,
        background=[reconciler.run, logger.run, shadow.run, shadow_logger.run],
        on_start=reconciler.reconcile_once,
        on_stop=lambda: _flush_all(shadow, logger, shadow_logger),
    )


async def _flush_all(
    shadow: ShadowScorer, logger: PredictionLogger, shadow_logger: PredictionLogger
) -> None:
    """What is still queued, before the publisher stops."""
    await logger.flush()
    await shadow.drain()
    await shadow_logger.flush()
