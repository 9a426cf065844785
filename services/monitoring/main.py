"""Entry point of the monitoring service: wiring only.

Builds settings, store, monitors, the registry client, consumer and servicer, then serves.
"""

from __future__ import annotations

import asyncio

from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from driftloop.protos.monitoring.v1 import monitoring_pb2_grpc
from driftloop.services.monitoring.adapters import kafka as events
from driftloop.services.monitoring.adapters.changelog import PendingChangelog
from driftloop.services.monitoring.adapters.grpc import FULL_NAME, MonitoringServicer
from driftloop.services.monitoring.adapters.registry import RegistryEvidence, RegistryProfiles
from driftloop.services.monitoring.core.fleet_dispatch import FleetDispatch
from driftloop.services.monitoring.core.fleet_thresholds import FleetSizes
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitors import ModelMonitors
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
    registry = RegistryClient(common, timeout=settings.registry_timeout_s)
    profiles = RegistryProfiles(registry, store)
    sizes = FleetSizes(profiles, refresh_s=settings.fleet_refresh_s)
    monitors = ModelMonitors(
        settings.policy(), settings.policies(), journal=True, scale=sizes.scale
    )
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
        profiles,
        retry_after_s=settings.profile_retry_s,
        history=history,
        shadow=shadow,
        changelog=PendingChangelog(common.kafka_connection()),
        fleets=FleetDispatch(
            monitors, sizes, settings.fleet_rules(), idle_after_s=settings.idle_after_s
        ),
        by_assignment=common.consumer_group_membership,
    )

    async def stop() -> None:
        await registry.close()
        await handler.close()

    scaled = common.consumer_group_membership
    consumers = [
        EventConsumer(
            bootstrap=common.kafka_connection(),
            group="monitoring",
            topic_names=events.PARTITIONED_TOPICS if scaled else events.TOPICS,
            publisher=publisher,
            on_batch=handler.handle_records,
            group_membership=scaled,
            # a model's state moves with its partition (adapters/moves.py): a range assignment
            # gives one instance the same partition of predictions, labels (and the changelog)
            assignors=(RangePartitionAssignor,),
            on_assigned=handler.on_assigned,
            on_revoked=handler.on_revoked,
        )
    ]
    if scaled:  # every instance sees every deployment and registry decision
        consumers.append(
            EventConsumer(
                bootstrap=common.kafka_connection(),
                group=None,
                topic_names=events.BROADCAST_TOPICS,
                publisher=publisher,
                on_batch=handler.handle_records,
                from_latest=True,
            )
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
        consumers=consumers,
        background=[handler.run_timer],
        on_start=handler.reconcile,
        on_stop=stop,
    )
