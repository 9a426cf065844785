"""Reconcile with the registry: deploy every model whose production version is not served;
a partition model that is not loaded only records its version (it loads on its first request).

The bus forgets across a broker restart, the registry does not; this loop closes any gap.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import structlog

from driftloop.services.serving.core.deployment import Deployer, Deployment
from driftloop.services.serving.core.model_cache import ModelCache, Wanted, is_partition
from driftloop.shared.errors import DriftloopError, Unavailable

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ProductionVersion:
    model: str
    version: str
    artifact_key: str
    sha256: str
    correlation_id: str
    """The version's lineage correlation id (empty when it has none)."""


class ProductionSource(Protocol):
    """What serving reads from the registry (adapters/registry.py, over the shared client);
    raises Unavailable when it cannot be reached, another DriftloopError when it refuses."""

    async def production_versions(self) -> dict[str, str]:
        """Model name -> production version, for models that have one."""
        ...

    async def get(self, model: str, version: str) -> ProductionVersion: ...


class DeployActions(Protocol):
    """Deploy a version and report the outcome on the bus (the Kafka adapter's ModelEvents)."""

    async def deploy_and_report(
        self,
        model: str,
        version: str,
        artifact_key: str,
        sha256: str,
        *,
        correlation_id: str = "",
        report_failure: bool = True,
    ) -> Deployment | None:
        """Deploy and publish the outcome; None when it failed (the old version keeps serving)."""
        ...

    async def deploy_shadow(self, model: str, version: str, artifact_key: str, sha256: str) -> bool:
        """Load `version` as the shadow; False when it failed (serving is unaffected)."""
        ...


class ShadowSource(Protocol):
    async def shadow_versions(self) -> dict[str, str]:
        """Model name -> shadow version (the registry's "shadow" alias), for models with one."""
        ...


class FleetSource(Protocol):
    async def fleet_columns(self) -> dict[str, tuple[str, ...]]:
        """Fleet name -> its spec's partition_by columns, for every fleet."""
        ...


WARN_EVERY_S = 30.0
"""How often a registry outage is logged again while it lasts."""


class Reconciler:
    def __init__(
        self,
        deployer: Deployer,
        events: DeployActions,
        registry: ProductionSource,
        *,
        interval_s: float,
        shadows: ShadowSource | None = None,
        partitions: ModelCache | None = None,
        fleets: FleetSource | None = None,
    ) -> None:
        """`partitions`: where partition models' production versions are recorded, to load on
        their first request (without it they deploy like any model); `fleets`: where each
        fleet's partition columns come from."""
        self._deployer = deployer
        self._shadows = shadows
        self._partitions = partitions
        self._fleets = fleets
        self._events = events
        self._registry = registry
        self._interval = interval_s
        self._reported: set[tuple[str, str]] = set()
        self._reported_rejected: set[tuple[str, str]] = set()
        self._registry_down = False
        self._down_since = 0.0
        self._down_warned = 0.0
        self.first_done = asyncio.Event()
        """Set once the first pass finished (successfully or not): the server is ready."""

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def run(self) -> None:
        """Reconcile every interval_s, forever (the first pass runs in on_start)."""
        while True:
            await asyncio.sleep(self._interval)  # a timer, not synchronisation
            await self.reconcile_once()

    async def reconcile_once(self) -> None:
        try:
            wanted = await self._registry.production_versions()
            if self._fleets is not None and self._partitions is not None:
                self._partitions.set_fleets(await self._fleets.fleet_columns())
            for model, version in sorted(wanted.items()):
                await self._reconcile_model(model, version)
            if self._shadows is not None:
                await self._reconcile_shadows(await self._shadows.shadow_versions())
            if self._registry_down:
                log.info("registry_reachable_again", down_s=round(self._now() - self._down_since))
            self._registry_down = False
        except Unavailable as exc:
            # warn at the start of an outage and then every WARN_EVERY_S, not every interval;
            # serving keeps what it has loaded
            now = self._now()
            if not self._registry_down:
                self._registry_down, self._down_since, self._down_warned = True, now, now
                log.warning("registry_unreachable", error=str(exc))
            elif now - self._down_warned >= WARN_EVERY_S:
                self._down_warned = now
                log.warning(
                    "registry_still_unreachable",
                    error=str(exc),
                    down_s=round(now - self._down_since),
                )
        except DriftloopError as exc:
            # not an outage (a refused call, a version gone, a registry bug): say so as an
            # error; serving keeps what it has loaded and the next pass asks again
            log.error("reconcile_failed", error=str(exc), error_type=type(exc).__name__)
        finally:
            self.first_done.set()

    async def _reconcile_shadows(self, wanted: dict[str, str]) -> None:
        """Load each registry shadow that is not loaded; drop shadows the registry no longer has."""
        slot = self._deployer.slot
        for model in slot.models():
            current = slot.shadow(model)
            if current is not None and wanted.get(model) != current.version:
                slot.clear_shadow(model, current.version)
                log.info("shadow_cleared", model=model, version=current.version)
        for model, version in sorted(wanted.items()):
            current = slot.shadow(model)
            if self._cold(model):
                continue  # a partition that is not loaded gets its shadow when it loads
            if (current is not None and current.version == version) or (
                model,
                version,
            ) in self._deployer.rejected:
                continue
            found = await self._registry.get(model, version)
            log.info("reconcile_shadow", model=model, version=version)
            await self._events.deploy_shadow(model, version, found.artifact_key, found.sha256)

    def _cold(self, model: str) -> bool:
        """A partition model that is neither loaded nor loading."""
        cache = self._partitions
        return cache is not None and is_partition(model) and not cache.resident(model)

    async def _reconcile_model(self, model: str, wanted: str) -> None:
        key = (model, wanted)
        if self._partitions is not None and is_partition(model):
            self._partitions.want(model, Wanted(wanted))
            if not self._partitions.resident(model):
                return  # loads on its first request
        if self._deployer.slot.production_version(model) == wanted:
            return
        if key in self._deployer.rejected:
            if key not in self._reported_rejected:
                self._reported_rejected.add(key)
                log.warning("reconcile_skips_rejected_version", model=model, version=wanted)
            return  # its artifact was refused; a new promotion will move production on
        version = await self._registry.get(model, wanted)
        log.info("reconcile_deploying", model=model, version=wanted)
        done = await self._events.deploy_and_report(
            model,
            version.version,
            version.artifact_key,
            version.sha256,
            correlation_id=version.correlation_id,
            report_failure=key not in self._reported,
        )
        if done is None:
            self._reported.add(key)
