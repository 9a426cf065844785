"""Kafka adapter: prediction logs and label batches feed the monitor, deployments switch its
reference profile (which one, and what to do while it is missing: core/references.py).

Drift decisions are published as DriftDetected on driftloop.drift, keyed by model, each the
start of a new correlation chain (the drift is a cause, not an effect of one event).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from driftloop.services.monitoring.adapters import pb
from driftloop.services.monitoring.adapters.changelog import PendingChangelog
from driftloop.services.monitoring.adapters.pb import drift_detected_pb
from driftloop.services.monitoring.core import metrics
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitor import DriftDecision, ModelMonitors
from driftloop.services.monitoring.core.references import References, ReferenceSource
from driftloop.services.monitoring.core.shadow import ShadowMonitor
from driftloop.shared.bus import topics
from driftloop.shared.bus.envelope import Envelope
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.errors import InvalidInput

log = structlog.get_logger(__name__)

TOPICS = [topics.PREDICTIONS, topics.LABELS, topics.DEPLOYMENTS]


class MonitoringHandler:
    """Handles PredictionLog, LabelBatch and ModelDeployed envelopes; others are ignored."""

    def __init__(
        self,
        monitors: ModelMonitors,
        publisher: EventPublisher,
        source: ReferenceSource,
        *,
        clock: Callable[[], float] = time.time,
        retry_after_s: float = 10.0,
        history: DriftHistory | None = None,
        shadow: ShadowMonitor | None = None,
        changelog: PendingChangelog | None = None,
    ) -> None:
        """`changelog`: where the predictions awaiting labels are kept across restarts (the
        monitors must then journal them: ModelMonitors(journal=True))."""
        self._monitors = monitors
        self._changelog = changelog
        self.shadow = shadow
        """Shadow versions' evidence (shadow logs stay out of the drift windows)."""
        self.history = history if history is not None else DriftHistory()
        """Every decision published (persisted when the history has a store)."""
        self._publisher = publisher
        self._clock = clock
        self._references = References(
            monitors, source, self.history, clock=clock, retry_after_s=retry_after_s
        )

    async def reconcile(self) -> None:
        """On start (the bus keeps no state): the drift history first, so an episode decided
        before a restart is neither forgotten nor decided again, then every production
        reference (see References.load_production)."""
        loaded = await asyncio.to_thread(self.history.load)
        log.info("drift_history_loaded", entries=loaded)
        await self._references.load_production()
        if self._changelog is not None:
            await self._changelog.start()
            restored = await self._changelog.read()
            for model, states in restored.items():
                self._monitors.restore_pending(model, states)
            log.info(
                "pending_predictions_restored",
                models=len(restored),
                states=sum(len(s) for s in restored.values()),
            )

    async def close(self) -> None:
        if self._changelog is not None:
            await self._changelog.stop()

    async def _write_pending(self, model: str) -> None:
        """The changes of `model`'s predictions awaiting labels, acknowledged by the broker
        before the handler returns (and so before the consumer commits what caused them)."""
        if self._changelog is not None and self._monitors.knows(model):
            await self._changelog.write(model, self._monitors.drain_pending(model))

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
        if not await self._references.ensure(logged.model):
            return
        frame = await asyncio.to_thread(pb.prediction_frame, logged.arrow_ipc)
        decision = await asyncio.to_thread(
            self._monitors.observe, logged.model, logged.version, frame, self._clock()
        )
        await self._write_pending(logged.model)
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
        monitor = self._monitors.get(batch.model)
        invalid = monitor.labels_invalid
        decision = await asyncio.to_thread(
            self._monitors.observe_labels,
            batch.model,
            list(batch.request_ids),
            list(batch.labels),
            self._clock(),
        )
        await self._write_pending(batch.model)
        metrics.LABELS_INVALID.labels(batch.model).inc(monitor.labels_invalid - invalid)
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
            reasons=list(decision.reasons),
            drift_share=decision.drift_share,
            drift_event_id=event.event_id,
        )

    async def _on_deployed(self, event: Envelope) -> None:
        deployed = event.model_deployed
        profile = await self._references.switch(deployed.model, deployed.version)
        if profile is None:
            return  # already on it (reconciled at start, or a re-delivery)
        log.info(
            "reference_switched",
            model=deployed.model,
            version=deployed.version,
            previous_version=deployed.previous_version,
            rows=profile.rows,
        )
