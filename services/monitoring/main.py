"""Entry point of the monitoring service: wiring only.

Builds settings, store, monitors, the registry client, consumer and servicer, then serves.
"""

from __future__ import annotations

import asyncio

from driftloop.protos.monitoring.v1 import monitoring_pb2_grpc
from driftloop.services.monitoring.adapters import kafka as events
from driftloop.services.monitoring.adapters.changelog import PendingChangelog
from driftloop.services.monitoring.adapters.grpc import FULL_NAME, MonitoringServicer
from driftloop.services.monitoring.adapters.registry import RegistryEvidence, RegistryProfiles
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.services.monitoring.core.shadow import ShadowComparisons, ShadowMonitor
from driftloop.services.monitoring.settings import MonitoringSettings
from driftloop.shared import logging
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.grpc.server import ServiceBinding
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.runtime import serve
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings


def main() -> None:
    common = CommonSettings()
    settings = MonitoringSettings()
    logging.configure("monitoring", json=common.log_json, level=common.log_level)
    asyncio.run(run(common, settings))


async def run(common: CommonSettings, settings: MonitoringSettings) -> None:
    # Built inside the running loop: aiokafka clients refuse to be created outside one.
    store = open_object_store(common)
    monitors = ModelMonitors(settings.policy(), settings.policies(), journal=True)
    registry = RegistryClient(common, timeout=settings.registry_timeout_s)
    publisher = EventPublisher(common.kafka_connection(), "monitoring")
    history = DriftHistory(store)
    shadow = ShadowMonitor(
        ShadowComparisons(
            capacity=settings.shadow_max_pending, report_every=settings.shadow_report_every
        ),
        RegistryEvidence(registry),
    )
    handler = events.MonitoringHandler(
        monitors,
        publisher,
        RegistryProfiles(registry, store),
        retry_after_s=settings.profile_retry_s,
        history=history,
        shadow=shadow,
        changelog=PendingChangelog(common.kafka_connection()),
    )

    async def stop() -> None:
        await registry.close()
        await handler.close()

    consumer = EventConsumer(
        bootstrap=common.kafka_connection(),
        group="monitoring",
        topic_names=events.TOPICS,
        publisher=publisher,
        on_event=handler.handle,
        group_membership=common.consumer_group_membership,
    )
    binding = ServiceBinding(
        add=monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server,
        servicer=MonitoringServicer(monitors, history),
        full_name=FULL_NAME,
    )
    await serve(
        "monitoring",
        common,
        [binding],
        publisher=publisher,
        consumers=[consumer],
        on_start=handler.reconcile,
        on_stop=stop,
    )
