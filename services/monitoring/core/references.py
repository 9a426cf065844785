"""Which reference profile each model's monitor compares live data with: every production
profile on start, a missing one lazily (asked for again after a delay), the deployed one on a
deployment. The bus keeps no state: the registry says which version is production.

A fleet's partitions are loaded lazily only (on their first prediction log or label), also on a
deployment of one not monitored yet: a fleet of 16,000 partitions would otherwise read 16,000
profiles at start, most for partitions that may see no traffic for hours.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import structlog

from driftloop.services.monitoring.core.fleet import fleet_of
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitors import ModelMonitors
from driftloop.services.monitoring.core.rebase import settles_as_good
from driftloop.shared.errors import DriftloopError, NotFound, Unavailable
from driftloop.shared.profile import ReferenceProfile

log = structlog.get_logger(__name__)


class ReferenceSource(Protocol):
    """Where references come from: the registry names the production version and where its
    profile is, the object store holds it (adapters/registry.py). Raises Unavailable when a
    dependency cannot be reached."""

    async def production_versions(self) -> dict[str, str]:
        """Model -> production version, for every model that has one."""
        ...

    async def production_version(self, model: str) -> str | None:
        """None when the model has no production version; NotFound when there is no model."""
        ...

    async def profile(self, model: str, version: str) -> ReferenceProfile:
        """The reference profile of one version; NotFound when it has none."""
        ...


class References:
    """Loads and switches the monitors' references; answers "is this model monitored yet?"."""

    def __init__(
        self,
        monitors: ModelMonitors,
        source: ReferenceSource,
        history: DriftHistory,
        *,
        clock: Callable[[], float] = time.time,
        retry_after_s: float = 10.0,
    ) -> None:
        self._monitors = monitors
        self._source = source
        self._history = history
        self._clock = clock
        self._retry_after_s = retry_after_s
        self._retry_at: dict[str, float] = {}

    async def load_production(self) -> None:
        """Every production profile (on start). Not fatal when it fails: a model left without
        its reference is then loaded by `ensure` when its first prediction log arrives."""
        try:
            wanted = await self._source.production_versions()
            for model, version in sorted(wanted.items()):
                if self._monitors.version(model) == version or fleet_of(model) is not None:
                    continue
                try:
                    profile = await self._source.profile(model, version)
                except NotFound as exc:
                    log.warning("profile_missing", model=model, version=version, error=str(exc))
                    continue
                self._load(model, version, profile)
        except Unavailable as exc:
            log.warning("registry_unreachable_at_start", error=str(exc))
        except DriftloopError as exc:  # a refusal or a registry bug, not an outage
            log.error("references_not_loaded_at_start", error=str(exc), error_type=_kind(exc))

    async def ensure(self, model: str) -> bool:
        """True once `model` has a reference. Otherwise ask for it, at most every
        `retry_after_s` per model; False (skip its predictions) while there is none."""
        if self._monitors.knows(model):
            return True
        now = self._clock()
        if now < self._retry_at.get(model, 0.0):
            return False
        found = await self._production_profile(model)
        if found is None:
            self._retry_at[model] = now + self._retry_after_s
            log.info("predictions_skipped_no_reference", model=model)
            return False
        self._load(model, *found)
        return True

    async def switch(self, model: str, version: str) -> ReferenceProfile | None:
        """On a deployment: the deployed version's reference; None when the monitor already
        compares with it (reconciled at start, or the event delivered again). Errors propagate:
        the consumer retries Unavailable, and dead-letters the rest."""
        if self._monitors.version(model) == version:
            return None
        if fleet_of(model) is not None and not self._monitors.knows(model):
            self._retry_at.pop(model, None)  # its next log loads the production reference
            return None
        profile = await self._source.profile(model, version)
        self._monitors.switch(model, version, profile)
        self._retry_at.pop(model, None)
        return profile

    def settle(self, model: str, correlation_id: str, reason: str) -> bool:
        """The registry rejected a candidate of `model` (ModelRejected): when its reason is the
        conclusive "the champion is as good" and it answers the drift episode this monitor last
        published (same correlation id: training's run and its retries carry the drift's chain;
        a fleet episode listing the partition counts), the shift was harmless: the monitor's
        reference becomes the live window (core/rebase.py), so the same shift does not open a
        new episode after episode_timeout_s. True when rebased."""
        if not settles_as_good(reason) or not self._monitors.knows(model):
            return False
        entry = self._history.latest(model)
        if entry is None or not correlation_id or entry.correlation_id != correlation_id:
            return False  # another episode's candidate (or none of ours): not this shift
        d = entry.decision
        version = d.version if d.model == model else dict(d.partitions).get(model)
        monitor = self._monitors.get(model)
        if monitor.version != version:
            return False  # a new version serves since: it has its own reference
        rebased = monitor.rebase()
        log.info(
            "reference_rebased" if rebased else "reference_not_rebased_too_few_rows",
            model=model,
            version=version,
            episode_id=d.episode_id,
            rows=monitor.profile.rows,
            reason=reason[:200],
        )
        return rebased

    async def _production_profile(self, model: str) -> tuple[str, ReferenceProfile] | None:
        try:
            version = await self._source.production_version(model)
            if version is None:
                return None
            return version, await self._source.profile(model, version)
        except (Unavailable, NotFound) as exc:
            log.warning("reference_unavailable", model=model, error=str(exc))
        except DriftloopError as exc:  # not an outage: logged as an error, asked again later
            log.error("reference_not_loaded", model=model, error=str(exc), error_type=_kind(exc))
        return None

    def _load(self, model: str, version: str, profile: ReferenceProfile) -> None:
        """First sight of a model in this process: its reference, and its latest episode (a
        drift decided before a restart is neither forgotten nor decided again)."""
        self._monitors.switch(model, version, profile)
        latest = self._history.latest_episode(model)
        if latest is not None:
            self._monitors.get(model).resume(*latest)
        log.info("reference_loaded", model=model, version=version, rows=profile.rows)


def _kind(exc: BaseException) -> str:
    return type(exc).__name__
