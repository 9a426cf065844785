"""Test harness: the registry's gRPC server and outbox publisher in-process, wired as in main.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from driftloop.protos.registry.v1 import registry_pb2_grpc
from driftloop.services.registry.adapters.grpc import ROLES, SERVICE_NAME, RegistryServicer
from driftloop.services.registry.adapters.kafka import OutboxPublisher
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.store import RegistryStore
from driftloop.services.registry.settings import RegistrySettings
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.grpc.client import aio_channel
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.settings import CommonSettings


@asynccontextmanager
async def registry_server(
    common: CommonSettings,
) -> AsyncIterator[registry_pb2_grpc.RegistryServiceStub]:
    """The registry servicer and its outbox publisher, as main.py wires them, on a free port."""
    await ensure_topics(common.bootstrap())
    store = RegistryStore(RegistrySettings().database(common.data_dir))
    publisher = EventPublisher(common.bootstrap(), "registry")
    await publisher.start()
    outbox = OutboxPublisher(store, publisher)
    binding = ServiceBinding(
        add=registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        servicer=RegistryServicer(Registry(store, on_commit=outbox.notify)),
        full_name=SERVICE_NAME,
        roles=ROLES,
    )
    server, _, _ = build_server(common, common.ports.registry, [binding])
    await server.start()
    task = asyncio.create_task(outbox.run())
    channel = aio_channel(common, "registry")
    try:
        yield registry_pb2_grpc.RegistryServiceStub(channel)
    finally:
        await channel.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop(grace=1)
        await publisher.stop()
        store.close()
