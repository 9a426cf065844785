"""Kafka adapter: prediction logs and label batches feed the monitor, deployments switch its
reference profile.

Drift decisions are published as DriftDetected on driftloop.drift, keyed by model, each the
start of a new correlation chain (the drift is a cause, not an effect of one event).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pandas as pd
import structlog

from driftloop.services.monitoring.adapters.pb import drift_detected_pb
from driftloop.services.monitoring.adapters.registry import ProfileSource
from driftloop.services.monitoring.core import metrics
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitor import DriftDecision, ModelMonitors
from driftloop.services.monitoring.core.shadow import ShadowMonitor
from driftloop.shared.bus import topics
from driftloop.shared.bus.envelope import Envelope
from driftloop.shared.bus.kafka import EventPublisher
from driftloop.shared.errors import InvalidInput, NotFound, Unavailable
from driftloop.shared.profile import ReferenceProfile
from driftloop.shared.records import ipc_to_table

log = structlog.get_logger(__name__)

TOPICS = [topics.PREDICTIONS, topics.LABELS, topics.DEPLOYMENTS]


class MonitoringHandler:
    """Handles PredictionLog, LabelBatch and ModelDeployed envelopes; others are ignored."""

    def __init__(
        self,
        monitors: ModelMonitors,
        publisher: EventPublisher,
        profiles: ProfileSource,
        *,
        clock: Callable[[], float] = time.time,
        retry_after_s: float = 10.0,
        history: DriftHistory | None = None,
        shadow: ShadowMonitor | None = None,
    ) -> None:
        self._monitors = monitors
        self.shadow = shadow
        """Shadow versions' evidence (shadow logs stay out of the drift windows)."""
        self.history = history if history is not None else DriftHistory()
        """Every decision published (persisted when the history has a store)."""
        self._publisher = publisher
        self._profiles = profiles
        self._clock = clock
        self._retry_after_s = retry_after_s
        self._retry_at: dict[str, float] = {}

    async def reconcile(self) -> None:
        """Load every production profile from the registry (on start; the bus keeps no state).

        An unreachable registry is not fatal: profiles are then loaded lazily per model when its
        first prediction log arrives. The drift history is read back first, so an episode
        decided before a restart is neither forgotten nor decided again.
        """
        loaded = await asyncio.to_thread(self.history.load)
        log.info("drift_history_loaded", entries=loaded)
        try:
            found = await self._profiles.production_profiles()
        except Unavailable as exc:
            log.warning("registry_unreachable_at_start", error=str(exc))
            return
        for model, version, profile in found:
            if self._monitors.version(model) != version:
                self._load(model, version, profile)
                log.info("reference_loaded", model=model, version=version, rows=profile.rows)

    async def handle(self, event: Envelope) -> None:
        kind = event.WhichOneof("payload")
        if kind == "prediction_log":
            await self._on_predictions(event)
        elif kind == "label_batch":
            await self._on_labels(event)
        elif kind == "model_deployed":
            await self._on_deployed(event)

    async def _on_predictions(self, event: Envelope) -> None:
        logged = event.prediction_log
        if self.shadow is not None and await self.shadow.on_predictions(logged):
            return
        metrics.ROWS_OBSERVED.labels(logged.model).inc(logged.row_count)
        if not await self._ensure_monitored(logged.model):
            return
        frame = await asyncio.to_thread(_decode, logged.arrow_ipc)
        decision = await asyncio.to_thread(
            self._monitors.observe, logged.model, logged.version, frame, self._clock()
        )
        metrics.record_report(self._monitors.report(logged.model))
        if decision is not None:
            await self._publish(decision)

    async def _on_labels(self, event: Envelope) -> None:
        batch = event.label_batch
        if len(batch.request_ids) != len(batch.labels):
            raise InvalidInput(
                f"LabelBatch for {batch.model!r} has {len(batch.request_ids)} request ids but "
                f"{len(batch.labels)} labels; they must pair up"
            )
        metrics.LABELS_RECEIVED.labels(batch.model).inc(len(batch.labels))
        if self.shadow is not None:
            await self.shadow.on_labels(batch)
        if not self._monitors.knows(batch.model):
            log.info("labels_skipped_unmonitored", model=batch.model, labels=len(batch.labels))
            return
        decision = await asyncio.to_thread(
            self._monitors.observe_labels,
            batch.model,
            list(batch.request_ids),
            list(batch.labels),
            self._clock(),
        )
        metrics.record_report(self._monitors.report(batch.model))
        if decision is not None:
            await self._publish(decision)

    async def _publish(self, decision: DriftDecision) -> None:
        drifted = [f.feature for f in decision.features if f.drifted]
        event = self._publisher.event(drift_detected_pb(decision))  # no cause: a new chain
        await self._publisher.publish(topics.DRIFT, decision.model, event)
        await asyncio.to_thread(self.history.record, decision, event.event_id, event.correlation_id)
        metrics.record_decision(decision)
        log.info(
            "drift_detected",
            model=decision.model,
            version=decision.version,
            episode_id=decision.episode_id,
            drifted=drifted,
            drift_share=decision.drift_share,
            drift_event_id=event.event_id,
        )

    async def _ensure_monitored(self, model: str) -> bool:
        """True once `model` has a reference; else try the registry (at most every few s)."""
        if self._monitors.knows(model):
            return True
        now = self._clock()
        if now < self._retry_at.get(model, 0.0):
            return False
        try:
            found = await self._profiles.production_profile(model)
        except (Unavailable, NotFound) as exc:
            log.warning("reference_unavailable", model=model, error=str(exc))
            found = None
        if found is None:
            self._retry_at[model] = now + self._retry_after_s
            log.info("predictions_skipped_no_reference", model=model)
            return False
        version, profile = found
        self._load(model, version, profile)
        log.info("reference_loaded", model=model, version=version, rows=profile.rows)
        return True

    def _load(self, model: str, version: str, profile: ReferenceProfile) -> None:
        """First sight of a model in this process: its reference, and its latest episode."""
        self._monitors.switch(model, version, profile)
        latest = self.history.latest(model)
        if latest is not None:
            d = latest.decision
            self._monitors.get(model).resume(d.episode_id, d.version, d.decided_at)

    async def _on_deployed(self, event: Envelope) -> None:
        deployed = event.model_deployed
        if self._monitors.version(deployed.model) == deployed.version:
            return  # already on it (reconciled at start, or a re-delivery)
        profile = await self._profiles.version_profile(deployed.model, deployed.version)
        self._monitors.switch(deployed.model, deployed.version, profile)
        self._retry_at.pop(deployed.model, None)
        log.info(
            "reference_switched",
            model=deployed.model,
            version=deployed.version,
            previous_version=deployed.previous_version,
            rows=profile.rows,
        )


def _decode(arrow_ipc: bytes) -> pd.DataFrame:
    return ipc_to_table(arrow_ipc).to_pandas()
