"""Entry point of the registry service: wiring only (settings, store, core, outbox, server)."""

from __future__ import annotations

import asyncio

from driftloop.protos.registry.v1 import registry_pb2_grpc
from driftloop.services.registry.adapters.grpc import ROLES, SERVICE_NAME, RegistryServicer
from driftloop.services.registry.adapters.kafka import OutboxPublisher
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.store import RegistryStore
from driftloop.services.registry.settings import RegistrySettings
from driftloop.shared import logging, runtime
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.grpc.server import ServiceBinding
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings


def main() -> None:
    common = CommonSettings()
    settings = RegistrySettings()
    logging.configure("registry", json=common.log_json, level=common.log_level)
    asyncio.run(_serve(common, settings))


async def _serve(common: CommonSettings, settings: RegistrySettings) -> None:
    # built inside the running loop: aiokafka's producer refuses to be created outside one
    store = RegistryStore(settings.database(common.data_dir))
    publisher = EventPublisher(common.kafka_connection(), "registry")
    outbox = OutboxPublisher(
        store,
        publisher,
        poll_seconds=settings.outbox_poll_seconds,
        retry_seconds=settings.outbox_retry_seconds,
    )
    registry = Registry(
        store,
        on_commit=outbox.notify,
        max_search_candidates=settings.max_search_candidates,
        max_partitions=settings.max_partitions,
        objects=open_object_store(common),
    )
    binding = ServiceBinding(
        add=registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        servicer=RegistryServicer(registry),
        full_name=SERVICE_NAME,
        roles=ROLES,
    )

    async def close_store() -> None:
        store.close()

    await runtime.serve(
        "registry",
        common,
        [binding],
        publisher=publisher,
        background=[outbox.run],
        on_stop=close_store,
    )
