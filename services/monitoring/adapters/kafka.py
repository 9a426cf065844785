"""Kafka adapter: prediction logs and label batches feed the monitor, deployments switch its
reference profile (which one, and what to do while it is missing: core/references.py).

Drift decisions are published as DriftDetected on driftloop.drift, keyed by model, each the
start of a new correlation chain (the drift is a cause, not an effect of one event). A fleet's
partitions (core/fleet_dispatch.py): their logs index request ids for the fleet's labels, and
their decisions wait briefly for a fleet episode (published by `run_timer` when none forms).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

import structlog
from aiokafka.structs import ConsumerRecord, TopicPartition

from driftloop.services.monitoring.adapters import pb
from driftloop.services.monitoring.adapters.changelog import PendingChangelog
from driftloop.services.monitoring.adapters.moves import PartitionMoves
from driftloop.services.monitoring.adapters.pb import drift_detected_pb
from driftloop.services.monitoring.core import metrics
from driftloop.services.monitoring.core.fleet import check_partition_log, fleet_of
from driftloop.services.monitoring.core.fleet_dispatch import FleetDispatch
from driftloop.services.monitoring.core.fleet_episodes import FleetEpisodeRules
from driftloop.services.monitoring.core.fleet_thresholds import FleetSizes
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitor import REQUEST_ID, DriftDecision
from driftloop.services.monitoring.core.monitors import ModelMonitors
from driftloop.services.monitoring.core.performance import PendingState
from driftloop.services.monitoring.core.references import References, ReferenceSource
from driftloop.services.monitoring.core.shadow import ShadowMonitor
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.envelope import Envelope
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.errors import InvalidInput

log = structlog.get_logger(__name__)

TOPICS = [topics.PREDICTIONS, topics.LABELS, topics.DEPLOYMENTS, topics.MODELS]
"""driftloop.models: the registry's decisions; a ModelRejected saying the champion is as good
on post-drift data rebases the monitor (core/references.py, References.settle)."""
PARTITIONED_TOPICS = [topics.PREDICTIONS, topics.LABELS]
BROADCAST_TOPICS = [topics.DEPLOYMENTS, topics.MODELS]
"""With several instances (adapters/moves.py) the group shares PARTITIONED_TOPICS by model
while every instance reads these single-partition topics (no group) and acts on its own
models: in the group, one member alone would see every deployment."""
HANDLED_IDS = 50_000
"""Event ids remembered by the batch handler, so that a batch retried record by record (after
one of its records failed) does not observe the others twice."""


class MonitoringHandler:
    """Handles PredictionLog, LabelBatch, ModelDeployed and ModelRejected envelopes; others are
    ignored."""

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
        fleets: FleetDispatch | None = None,
        tick_s: float = 1.0,
        by_assignment: bool = False,
    ) -> None:
        """`changelog`: where the predictions awaiting labels are kept across restarts (the
        monitors must then journal them: ModelMonitors(journal=True)). `fleets`: the fleets'
        indexes, sizes and episodes over the same monitors (default: no registry counts,
        default rules); `tick_s`: how often `run_timer` releases held decisions.
        `by_assignment`: one of several instances in a consumer group, monitoring only the
        models of the partitions the group assigns it (see `on_assigned`); otherwise this
        instance reads every partition and restores the whole changelog at start."""
        self._monitors = monitors
        self.fleets = fleets or FleetDispatch(monitors, FleetSizes(), FleetEpisodeRules())
        self._tick_s = tick_s
        self._dirty: set[str] = set()
        """Models whose predictions awaiting labels changed since the changelog last had them."""
        self._unsent: dict[str, list[tuple[str, PendingState]]] = {}
        """Changes drained from the monitors that the changelog has not taken yet."""
        self._handled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._changelog = changelog
        self._moves = (
            PartitionMoves(changelog, monitors, self.fleets)
            if by_assignment and changelog is not None
            else None
        )
        """Where the instance's partitions are, restored on assignment (None: every one)."""
        self._moving = asyncio.Lock()
        """Held while records are handled or partitions move, so that they never interleave."""
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
        if self._moves is not None:
            await self._moves.start()  # the changelog is read as partitions are assigned
        elif self._changelog is not None:
            await self._changelog.start()
            restored = await self._changelog.read()
            for model, states in restored.items():
                self._monitors.restore_pending(model, states)
            log.info(
                "pending_predictions_restored",
                models=len(restored),
                states=sum(len(s) for s in restored.values()),
                fleet_request_ids=self.fleets.restore(restored),
            )
        for entry in self.history.entries():
            d = entry.decision
            if d.partitions:
                self.fleets.episodes.resume(
                    d.model, d.episode_id, d.decided_at, [p for p, _ in d.partitions]
                )

    async def close(self) -> None:
        """On a clean stop: publish the partition decisions still held, stop the changelog."""
        try:
            for decision in self.fleets.flush(self._clock()):
                await self._publish(decision)
        except Exception as exc:  # noqa: BLE001 - stopping anyway; they decide again on restart
            log.error("held_decisions_not_published", error=repr(exc))
        if self._changelog is not None:
            await self._changelog.stop()

    async def run_timer(self) -> None:
        """Release the partition decisions whose fleet-episode hold is over (until cancelled)."""
        while True:
            await asyncio.sleep(self._tick_s)  # poll: a timer, not a wait on a condition
            for decision in self.fleets.tick(self._clock()):
                await self._publish(decision)

    def _write_pending(self, *models: str) -> None:
        """These models' predictions awaiting labels changed: the changelog gets them before
        the consumer commits what caused them (`_send_pending`)."""
        if self._changelog is not None:
            self._dirty.update(models)

    async def _send_pending(self) -> Awaitable[None] | None:
        """Send every change not in the changelog yet; the awaitable of the broker's acks."""
        if self._changelog is None or not (self._dirty or self._unsent):
            return None
        for model in sorted(self._dirty):
            if self._monitors.knows(model):
                self._unsent.setdefault(model, []).extend(self._monitors.drain_pending(model))
        self._dirty.clear()
        acks = await self._changelog.send_many(self._unsent)  # raises: kept for the retry
        self._unsent = {}
        return acks

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """A rebalance handed these partitions to this instance (EventConsumer.on_assigned):
        forget the models of the partitions it no longer has, restore the pending predictions
        and fleet request ids of the ones it gained from the changelog, before any of their
        records is handled (a restore that fails is tried again before the next records)."""
        if self._moves is None:
            return
        async with self._moving:
            dropped = self._moves.assigned(assigned)
            for model in dropped:
                self._dirty.discard(model)
                lost = self._unsent.pop(model, None)
                if lost:  # the flush at revocation failed: the next owner lacks these
                    log.error("pending_changes_lost_with_partition", model=model, changes=len(lost))
            try:
                await self._restore_owed()
            except Exception as exc:  # noqa: BLE001 - aiokafka would swallow it; retried later
                log.error("pending_restore_failed_retrying", error=repr(exc))

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """A rebalance takes these partitions away (EventConsumer.on_revoked): every change
        of predictions awaiting labels goes to the changelog, acknowledged, before the next
        owner reads it. The models are forgotten at the assignment that follows, unless their
        partition comes back (a rebalance revokes every partition first)."""
        if self._moves is None:
            return
        async with self._moving:
            try:
                acks = await self._send_pending()
                if acks is not None:
                    await acks
            except Exception as exc:  # noqa: BLE001 - aiokafka would swallow it: say so
                log.error(
                    "pending_changes_not_flushed_on_revoke",
                    partitions=sorted({tp.partition for tp in revoked}),
                    error=repr(exc),
                )

    async def _restore_owed(self) -> None:
        """The changelog of partitions assigned but not restored yet; the references of their
        plain models loaded at once, as at start (a fleet's partitions load lazily)."""
        if self._moves is None:
            return
        for model in await self._moves.restore_owed():
            if fleet_of(model) is None:
                await self._references.ensure(model)

    async def handle(self, event: Envelope) -> None:
        """One event, its changelog acknowledged before this returns (`on_event`)."""
        async with self._moving:
            await self._restore_owed()
            await self._handle(event)
            acks = await self._send_pending()
        if acks is not None:
            await acks

    async def handle_records(self, records: list[ConsumerRecord]) -> Awaitable[None] | None:
        """The records one poll returned (`on_batch`): each event as `handle` does, then the
        changelog of them all in one round; its acks are the tail the consumer waits for
        before it commits the poll. Idempotent per record (event ids already handled are
        skipped), as the consumer retries a failed batch record by record."""
        async with self._moving:
            await self._restore_owed()  # raises Unavailable: retried
            return await self._handle_records(records)

    async def _handle_records(self, records: list[ConsumerRecord]) -> Awaitable[None] | None:
        for record in records:
            event = envelope.decode(record.value)
            if event.event_id in self._handled:
                continue
            with structlog.contextvars.bound_contextvars(
                event_id=event.event_id,
                correlation_id=event.correlation_id,
                event_type=event.type,
            ):
                await self._handle(event)
            self._handled[event.event_id] = None
            if len(self._handled) > HANDLED_IDS:
                self._handled.popitem(last=False)
        return await self._send_pending()

    async def _handle(self, event: Envelope) -> None:
        kind = event.WhichOneof("payload")
        if kind == "prediction_log":
            await self._on_predictions(event)
        elif kind == "label_batch":
            await self._on_labels(event)
        elif kind == "model_deployed":
            await self._on_deployed(event)
        elif kind == "model_rejected":
            rejected = event.model_rejected
            await asyncio.to_thread(
                self._references.settle, rejected.model, event.correlation_id, rejected.reason
            )

    async def _on_predictions(self, event: Envelope) -> None:
        logged = event.prediction_log
        if self.shadow is not None and await self.shadow.on_predictions(logged):
            return
        if logged.fleet:
            check_partition_log(logged.model, logged.fleet)
        metrics.ROWS_OBSERVED.labels(logged.model).inc(logged.row_count)
        if not await self._monitored(logged.model):
            return
        frame = await asyncio.to_thread(pb.prediction_frame, logged.arrow_ipc)
        now = self._clock()
        decisions = [
            await asyncio.to_thread(
                self._monitors.observe, logged.model, logged.version, frame, now
            )
        ]
        touched = {logged.model}
        if logged.fleet and REQUEST_ID in frame.columns:
            ids = frame[REQUEST_ID].astype(str).tolist()
            found = self.fleets.logged(logged.model, logged.fleet, ids)
            touched |= found.touched
            if found.early_ids:
                decisions.append(
                    await asyncio.to_thread(
                        self._monitors.observe_labels,
                        logged.model,
                        found.early_ids,
                        found.early_labels,
                        now,
                    )
                )
        self._write_pending(*touched)
        self.fleets.saw(logged.model, now)
        metrics.record_monitor(self._monitors.get(logged.model))
        await self._decided(decisions, now)

    async def _monitored(self, model: str) -> bool:
        """Whether `model` has its reference (loaded now if need be); a partition's fleet size
        is asked for first, so that its monitor is built with the fleet's thresholds."""
        fleet = fleet_of(model)
        if fleet is not None and not self._monitors.knows(model):
            if await self.fleets.sizes.refresh(fleet):
                self.fleets.rescale(fleet)
        return await self._references.ensure(model)

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
        routed = self.fleets.route(batch.model, list(batch.request_ids), list(batch.labels))
        for model, ids, labels in routed:
            await self._observe_labels(model, ids, labels)

    async def _observe_labels(self, model: str, ids: list[str], labels: list[str]) -> None:
        """Labels for one monitor: a plain model's if it is monitored, a partition's or one
        with restored predictions once its reference is loaded (after a restart or a move its
        first labels may come before its logs)."""
        known = self._monitors.knows(model)
        lazy = fleet_of(model) is not None or self._monitors.has_restored(model)
        if not known and (not lazy or not await self._monitored(model)):
            log.info("labels_skipped_unmonitored", model=model, labels=len(labels))
            return
        monitor = self._monitors.get(model)
        invalid = monitor.labels_invalid
        now = self._clock()
        decision = await asyncio.to_thread(self._monitors.observe_labels, model, ids, labels, now)
        self._write_pending(model)
        metrics.LABELS_INVALID.labels(model).inc(monitor.labels_invalid - invalid)
        self.fleets.saw(model, now)
        metrics.record_monitor(monitor)
        await self._decided([decision], now)

    async def _decided(self, decisions: list[DriftDecision | None], now: float) -> None:
        for decision in decisions:
            if decision is not None:
                for released in self.fleets.decided(decision, now):
                    await self._publish(released)

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
            partitions=len(decision.partitions),
        )

    async def _on_deployed(self, event: Envelope) -> None:
        deployed = event.model_deployed
        if (
            self._moves is not None
            and not self._moves.owns(deployed.model)
            and not self._monitors.knows(deployed.model)
        ):
            return  # another instance monitors it (each reads every deployment)
        profile = await self._references.switch(deployed.model, deployed.version)
        self.fleets.deployed(deployed.model)
        if profile is None:
            return  # already on it (reconciled at start, or a re-delivery)
        log.info(
            "reference_switched",
            model=deployed.model,
            version=deployed.version,
            previous_version=deployed.previous_version,
            rows=profile.rows,
        )
