"""Kafka adapters: ModelPromoted -> deploy -> ModelDeployed / DeploymentFailed, and the
PredictionLog publisher the prediction logger sends through.
"""

from __future__ import annotations

import structlog

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.serving.core import metrics
from driftloop.services.serving.core.deployment import Deployer, Deployment
from driftloop.services.serving.core.model_cache import ModelCache, Wanted, is_partition
from driftloop.services.serving.core.prediction_log import PublishLog
from driftloop.shared.bus import topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.envelope import Envelope
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.settings import CommonSettings

log = structlog.get_logger(__name__)


class ModelEvents:
    """Deploys promoted versions and reports each outcome on driftloop.deployments."""

    def __init__(
        self,
        deployer: Deployer,
        publisher: EventPublisher,
        instance: str,
        partitions: ModelCache | None = None,
    ) -> None:
        """`partitions`: partition models load lazily there (a promotion of one that is not
        loaded only records what loads next)."""
        self._deployer = deployer
        self._publisher = publisher
        self._instance = instance
        self._partitions = partitions

    async def handle(self, event: Envelope) -> None:
        kind = event.WhichOneof("payload")
        if kind == "model_shadowed":
            s = event.model_shadowed
            if self._cold(s.model):
                return  # a partition that is not loaded gets its shadow when it loads (reconcile)
            await self.deploy_shadow(s.model, s.version, s.artifact_uri, s.artifact_sha256)
            return
        if kind == "model_rejected":
            rejected = event.model_rejected
            if self._deployer.slot.clear_shadow(rejected.model, rejected.version) is not None:
                metrics.show_shadow_version(rejected.model, "")
                log.info("shadow_cleared", model=rejected.model, version=rejected.version)
            return
        if kind != "model_promoted":
            return  # registrations change nothing that serves
        promoted = event.model_promoted
        await self.deploy_and_report(
            promoted.model,
            promoted.version,
            promoted.artifact_uri,
            promoted.artifact_sha256,
            cause=event,
        )

    async def deploy_and_report(
        self,
        model: str,
        version: str,
        artifact_key: str,
        sha256: str,
        *,
        cause: Envelope | None = None,
        correlation_id: str = "",
        report_failure: bool = True,
    ) -> Deployment | None:
        """Deploy and publish the outcome; None when it failed (the old version keeps serving).

        A version that is already production is reported as deployed again when a promotion
        event asks for it, so the promotion's causal chain always ends in a ModelDeployed. A
        partition model that is not loaded is not deployed: the version is recorded to load on
        its first request (every request from now on gets it), and a promotion reports it as
        deployed with load_seconds 0.
        """
        if self._partitions is not None and is_partition(model):
            previous = self._partitions.want(model, Wanted(version, artifact_key, sha256))
            if not self._partitions.resident(model):
                return await self._recorded(model, version, previous, cause, correlation_id)
        with structlog.contextvars.bound_contextvars(model=model, version=version):
            try:
                done = await self._deployer.deploy(model, version, artifact_key, sha256)
            except Exception as exc:  # noqa: BLE001 - any failure is reported, old model kept
                error = f"{type(exc).__name__}: {exc}"
                log.warning("deployment_failed", artifact_key=artifact_key, error=error)
                if report_failure:
                    failed = events_pb2.DeploymentFailed(
                        model=model, version=version, instance=self._instance, error=error[:4000]
                    )
                    await self._send(failed, model, cause, correlation_id)
                return None
            if not done.swapped and cause is None:
                return done
            deployed = events_pb2.ModelDeployed(
                model=model,
                version=version,
                previous_version=done.previous_version,
                instance=self._instance,
                load_seconds=done.load_seconds,
            )
            await self._send(deployed, model, cause, correlation_id)
            log.info(
                "model_deployed",
                previous_version=done.previous_version,
                load_seconds=done.load_seconds,
                swapped=done.swapped,
            )
            return done

    async def _recorded(
        self,
        model: str,
        version: str,
        previous: str,
        cause: Envelope | None,
        correlation_id: str,
    ) -> Deployment:
        """A cold partition's new production version, recorded: reported when promoted."""
        if cause is not None:
            deployed = events_pb2.ModelDeployed(
                model=model, version=version, previous_version=previous, instance=self._instance
            )
            await self._send(deployed, model, cause, correlation_id)
        log.info("partition_version_recorded", model=model, version=version, previous=previous)
        return Deployment(model, version, previous, 0.0, swapped=False)

    def _cold(self, model: str) -> bool:
        cache = self._partitions
        return cache is not None and is_partition(model) and not cache.resident(model)

    async def deploy_shadow(self, model: str, version: str, artifact_key: str, sha256: str) -> bool:
        """Load `version` as the shadow (verified, warmed up); False when it failed (logged,
        counted): serving is unaffected either way."""
        with structlog.contextvars.bound_contextvars(model=model, version=version):
            try:
                await self._deployer.deploy_shadow(model, version, artifact_key, sha256)
            except Exception as exc:  # noqa: BLE001 - a shadow that cannot load is only logged
                log.warning("shadow_deploy_failed", error=f"{type(exc).__name__}: {exc}")
                return False
            return True

    async def _send(
        self,
        payload: events_pb2.ModelDeployed | events_pb2.DeploymentFailed,
        model: str,
        cause: Envelope | None,
        correlation_id: str,
    ) -> None:
        event = self._publisher.event(payload, cause=cause, correlation_id=correlation_id)
        await self._publisher.publish(topics.DEPLOYMENTS, model, event)


def model_events_consumer(
    common: CommonSettings, publisher: EventPublisher, handler: ModelEvents
) -> EventConsumer:
    """Every replica reads every promotion from the latest offset and commits nothing: the
    registry, not the bus, is the truth about production, and reconcile covers the gap."""
    return EventConsumer(
        bootstrap=common.kafka_connection(),
        group=None,
        topic_names=[topics.MODELS],
        publisher=publisher,
        on_event=handler.handle,
        from_latest=True,
    )


def prediction_log_publisher(publisher: EventPublisher, *, shadow: bool = False) -> PublishLog:
    """publish(model, version, arrow_ipc, row_count, fleet) as a PredictionLog keyed by model
    (marked as a shadow's predictions when `shadow`; `fleet` set for a partition model's rows
    of a request addressed to its fleet)."""

    async def publish(
        model: str, version: str, arrow_ipc: bytes, row_count: int, fleet: str = ""
    ) -> None:
        payload = events_pb2.PredictionLog(
            model=model,
            version=version,
            arrow_ipc=arrow_ipc,
            row_count=row_count,
            shadow=shadow,
            fleet=fleet,
        )
        await publisher.publish(topics.PREDICTIONS, model, publisher.event(payload))

    return publish
