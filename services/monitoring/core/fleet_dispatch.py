"""What a fleet's traffic does to its partitions' monitors: logs index their request ids, labels
are routed by them, partition decisions wait for a fleet episode, idle monitors are compacted.

Pure domain logic tying core/fleet.py (label routing), fleet_thresholds.py (N and the scaled
policies) and fleet_episodes.py (grouping) to the monitors; the event handler does the I/O
(references, changelog, publishing) around these calls. Nothing here evaluates: a monitor tests
its window only when its own rows arrive (every eval_every rows), so a quiet partition costs no
CPU; the timer only releases held decisions and compacts idle windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog

from driftloop.services.monitoring.core.decision import DriftDecision
from driftloop.services.monitoring.core.fleet import FleetIndexes, fleet_of, group_evicted
from driftloop.services.monitoring.core.fleet_episodes import FleetEpisodeRules, FleetEpisodes
from driftloop.services.monitoring.core.fleet_thresholds import FleetSizes
from driftloop.services.monitoring.core.monitors import ModelMonitors
from driftloop.services.monitoring.core.performance import PendingState

log = structlog.get_logger(__name__)


@dataclass
class Logged:
    """What indexing a partition's logged request ids changed."""

    touched: set[str] = field(default_factory=set)
    """Models whose predictions awaiting labels changed (their changelog must be written)."""
    early_ids: list[str] = field(default_factory=list)
    early_labels: list[str] = field(default_factory=list)
    """Labels the fleet's monitor held for these ids (they came before the log)."""


class FleetDispatch:
    """The fleets' request indexes, sizes and episodes over one set of monitors."""

    def __init__(
        self,
        monitors: ModelMonitors,
        sizes: FleetSizes,
        rules: FleetEpisodeRules,
        *,
        idle_after_s: float = 300.0,
    ) -> None:
        self.monitors = monitors
        self.sizes = sizes
        self.indexes = FleetIndexes(lambda f: monitors.policy_for(f).max_pending_predictions)
        self.episodes = FleetEpisodes(
            rules,
            monitored=sizes.monitored_count,
            version=lambda f: monitors.version(f) or "",
        )
        self._idle_after_s = idle_after_s
        self._active: dict[str, float] = {}
        """Monitors that logged rows since they were last compacted, and when they last did."""

    def saw(self, model: str, now: float) -> None:
        """`model` logged rows or got labels; a new partition may move its fleet's N."""
        self._active[model] = now
        fleet = fleet_of(model)
        if fleet is not None:
            self.monitors.fallback(fleet)
        if self.sizes.saw(model):
            self.rescale(fleet or model)

    def rescale(self, fleet: str) -> None:
        """The fleet's N moved: its monitors' tests take the new share of the budget now (their
        sequential detectors at their next reset, fleet_thresholds.py). A fleet with
        partition models answers only fallback rows with its global model (ModelMonitors.
        fallback)."""
        self.monitors.fallback(fleet)
        for partition in self.sizes.monitored(fleet):
            if self.monitors.knows(partition):
                self.monitors.get(partition).policy = self.monitors.policy_for(partition)

    def logged(self, partition: str, fleet: str, request_ids: list[str]) -> Logged:
        """A partition answered these requests of `fleet`: index them (what the index forgets,
        its partition's join forgets too) and take back the labels the fleet's monitor held."""
        found = Logged(touched={partition})
        for other, ids in group_evicted(self.indexes.add(fleet, partition, request_ids)).items():
            if self.monitors.knows(other):
                self.monitors.get(other).forget(ids)
                found.touched.add(other)
        if self.monitors.knows(fleet):
            found.early_ids, found.early_labels = self.monitors.get(fleet).take_early(request_ids)
            if found.early_ids:
                found.touched.add(fleet)
        return found

    def route(
        self, model: str, request_ids: list[str], labels: list[str]
    ) -> list[tuple[str, list[str], list[str]]]:
        """(model, ids, labels) per monitor a label batch addressed to `model` feeds: a fleet's
        partitions by their indexed ids, the rest (all, for any other model) to `model`."""
        routed, ids, kept = self.indexes.route(model, request_ids, labels)
        found = [(partition, p_ids, p_labels) for partition, (p_ids, p_labels) in routed.items()]
        if ids or not found:
            found.append((model, ids, kept))
        return found

    def decided(self, decision: DriftDecision, now: float) -> list[DriftDecision]:
        """What to publish now for a monitor's decision: a plain model's at once, a partition's
        once its fleet episode rules say so (possibly grouped with others)."""
        fleet = fleet_of(decision.model)
        if fleet is None:
            return [decision]
        return self._stamped(self.episodes.hold(fleet, decision, now))

    def deployed(self, model: str) -> None:
        """A new version of `model` is in force: a fleet's global model closes its episode."""
        self.episodes.close(model)

    def tick(self, now: float) -> list[DriftDecision]:
        """Every second or so: decisions whose hold is over; compaction of idle monitors."""
        for model, at in list(self._active.items()):
            if now - at >= self._idle_after_s:
                del self._active[model]
                if self.monitors.knows(model):
                    self.monitors.get(model).compact()
        return self._stamped(self.episodes.due(now))

    def flush(self, now: float) -> list[DriftDecision]:
        return self._stamped(self.episodes.flush(now))

    def restore(self, states: dict[str, list[tuple[str, PendingState]]]) -> int:
        """The indexes from the changelog of predictions awaiting labels (after a restart)."""
        return self.indexes.restore(states)

    def drop(self, models: Iterable[str]) -> list[str]:
        """Forget these models (their partition moved to another instance): their monitors,
        restored states, the fleet request ids they answered; the ones that were known."""
        names = list(models)
        self.indexes.drop(names)
        for model in names:
            self._active.pop(model, None)
        return self.monitors.drop(names)

    def _stamped(self, decisions: list[DriftDecision]) -> list[DriftDecision]:
        """A fleet episode's partitions take its id as their own open episode's."""
        for decision in decisions:
            for partition, version in decision.partitions:
                if self.monitors.knows(partition):
                    monitor = self.monitors.get(partition)
                    opened = monitor.episode.opened_at if monitor.episode else decision.decided_at
                    monitor.resume(decision.episode_id, version, opened)
        return decisions
