"""Entry point of the serving service: wiring only.

Builds the slot, deployer, partition model cache, fleet router, prediction logger, Kafka
consumer, reconciler and V2 servicer; with
DRIFTLOOP_SERVING_WORKERS > 1 starts that many worker processes instead (see workers.py).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import structlog

from driftloop.services.serving import workers
from driftloop.services.serving.adapters.grpc import InferenceServicer, binding
from driftloop.services.serving.adapters.kafka import (
    ModelEvents,
    model_events_consumer,
    prediction_log_publisher,
)
from driftloop.services.serving.adapters.kafka_inference import (
    KafkaInference,
    kafka_inference_consumer,
)
from driftloop.services.serving.adapters.registry import RegistryVersions
from driftloop.services.serving.core.artifact_cache import ArtifactCache
from driftloop.services.serving.core.deployment import Deployer
from driftloop.services.serving.core.fleet_router import FleetRouter
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.model_cache import ModelCache
from driftloop.services.serving.core.prediction_log import PredictionLogger
from driftloop.services.serving.core.reconcile import Reconciler
from driftloop.services.serving.core.shadow import ShadowScorer
from driftloop.services.serving.core.slot import ModelSlot
from driftloop.services.serving.settings import ServingSettings
from driftloop.shared import artifacts, logging, runtime
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings


def main() -> None:
    common = CommonSettings()
    settings = ServingSettings()
    logging.configure("serving", json=common.log_json, level=common.log_level)
    worker = workers.worker_index(sys.argv[1:])
    if worker is None and settings.workers > 1:
        sys.exit(workers.run_parent(common, settings.workers))
    if worker is not None:
        structlog.contextvars.bind_contextvars(worker=worker)
        # the parent serves every worker's metrics on the metrics port; this one takes any port
        ports = common.ports.model_copy(update={"metrics_serving": 0})
        common = common.model_copy(update={"ports": ports})
    with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
        runner.run(run(common, settings, worker=worker))


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop serving runs on: uvloop (libuv; each loop turn costs a fraction of
    asyncio's, and the micro-batcher counts turns) or the standard one."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform (Windows): the standard loop works
            structlog.get_logger(__name__).warning("uvloop_unavailable", using="asyncio")
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


async def run(common: CommonSettings, settings: ServingSettings, worker: int | None = None) -> None:
    """Build the parts inside the event loop (aiokafka's producer needs a running loop).

    `worker`: this process's index when it is one of several serving workers on one port."""
    store = open_object_store(common)

    async def fetch(key: str) -> bytes:
        return await asyncio.to_thread(store.get, key)

    async def load(data: bytes, sha256: str) -> Any:
        return await asyncio.to_thread(artifacts.load_model, data, sha256)

    publisher = EventPublisher(common.kafka_connection(), "serving")
    slot = ModelSlot()
    deployer = Deployer(
        slot,
        fetch,
        load,
        compiled=settings.compiled_form,
        artifacts=ArtifactCache(settings.artifact_cache_bytes()),
    )
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
    client = RegistryClient(common, timeout=settings.reconcile_timeout_s)
    registry = RegistryVersions(client)
    partitions = ModelCache(deployer, registry, budget_bytes=settings.model_memory_bytes())
    model_events = ModelEvents(
        deployer, publisher, settings.instance_name(worker), partitions=partitions
    )
    reconciler = Reconciler(
        deployer,
        model_events,
        registry,
        interval_s=settings.reconcile_interval_s,
        shadows=registry,
        partitions=partitions,
        fleets=registry,
    )
    inference = InferenceService(
        slot,
        logger,
        batching=settings.batch_policy(),
        max_request_rows=settings.max_request_rows,
        shadow=shadow,
        router=FleetRouter(slot, partitions),
    )
    servicer = InferenceServicer(inference, reconciler.first_done.is_set, worker=worker)
    # every worker reads every model event (no group), so all of them swap
    consumers = [model_events_consumer(common, publisher, model_events)]
    if settings.kafka_inference:
        kafka = KafkaInference(inference, publisher)
        consumers.append(
            kafka_inference_consumer(
                common, publisher, kafka, worker=worker, workers=settings.workers
            )
        )
    await runtime.serve(
        "serving",
        common,
        [binding(servicer)],
        publisher=publisher,
        consumers=consumers,
        background=[reconciler.run, logger.run, shadow.run, shadow_logger.run],
        on_start=reconciler.reconcile_once,
        on_stop=lambda: _flush_all(shadow, logger, shadow_logger, client),
        reuse_port=worker is not None,
        max_request_bytes=settings.max_request_bytes,
    )


async def _flush_all(
    shadow: ShadowScorer,
    logger: PredictionLogger,
    shadow_logger: PredictionLogger,
    client: RegistryClient,
) -> None:
    """What is still queued, before the publisher stops; then the registry channel."""
    await logger.flush()
    await shadow.drain()
    await shadow_logger.flush()
    await client.close()
