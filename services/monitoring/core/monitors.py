"""Every monitored model's ModelMonitor (core/monitor.py), by model name, each with its model's
policy; a fleet's global model marked as answering only the fleet's fallback rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd

from driftloop.services.monitoring.core.decision import DriftDecision
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.fleet import fleet_of
from driftloop.services.monitoring.core.monitor import ModelMonitor
from driftloop.services.monitoring.core.performance import PendingState
from driftloop.services.monitoring.core.report import DriftReport
from driftloop.shared.errors import NotFound
from driftloop.shared.profile import ReferenceProfile


class ModelMonitors:
    """Every monitored model's ModelMonitor, by model name, each with its model's policy."""

    def __init__(
        self,
        policy: DriftPolicy,
        overrides: dict[str, DriftPolicy] | None = None,
        *,
        journal: bool = False,
        scale: Callable[[str, DriftPolicy], DriftPolicy] | None = None,
    ) -> None:
        """`journal`: each monitor records the changes of its predictions awaiting labels
        (ModelMonitor), which the caller must drain (`drain_pending`). `scale(model, policy)`:
        the policy a model's monitor is built with (a fleet's partitions: fleet_thresholds.py)."""
        self.policy = policy
        """The default policy; `overrides` hold the models (or fleets) that have their own."""
        self.overrides = dict(overrides or {})
        self.journal = journal
        self._scale = scale
        self._monitors: dict[str, ModelMonitor] = {}
        self._restored: dict[str, list[tuple[str, PendingState]]] = {}
        """Recorded states of models not monitored yet (applied when they are)."""
        self._fallback: set[str] = set()
        """Fleets whose global model answers only the rows of partitions without a model."""

    def fallback(self, fleet: str) -> None:
        """Partition models of `fleet` answer some of its rows: its global model's monitor sees
        only the rest (routes with no production model of their own yet, unknown routes), a
        different population from its reference, which training built from every partition.

        Why no feature, prediction or label-distribution test there, rather than restricting
        or reweighting the reference: a profile keeps each column's values apart (samples and
        frequencies per column, not rows), so it cannot be cut by partition value, and the mix
        of partitions falling back changes whenever a partition model is promoted; any test of
        distributions would fire on the mix, not on drift (a false alarm at once, then one per
        promotion). The error detectors stay: they judge the model's errors on the rows it does
        answer. The fleet still sees a change of its data through its partitions' monitors
        (fleet episodes refit the global model too)."""
        if fleet in self._fallback:
            return
        self._fallback.add(fleet)
        monitor = self._monitors.get(fleet)
        if monitor is not None:
            monitor.population_tests = False

    def policy_for(self, model: str) -> DriftPolicy:
        """The model's own policy, else its fleet's (a partition), else the default; scaled."""
        fleet = fleet_of(model)
        found = self.overrides.get(model) or self.overrides.get(fleet or model, self.policy)
        return found if self._scale is None else self._scale(model, found)

    def switch(self, model: str, version: str, profile: ReferenceProfile) -> None:
        """Monitor `model` at `version` against `profile` (first sight or a deployment)."""
        monitor = self._monitors.get(model)
        if monitor is None:
            monitor = ModelMonitor(
                model, self.policy_for(model), version, profile, journal=self.journal
            )
            self._monitors[model] = monitor
            monitor.population_tests = model not in self._fallback
            restored = self._restored.pop(model, None)
            if restored:
                monitor.restore_pending(restored)
        else:
            monitor.switch(version, profile)

    def restore_pending(self, model: str, states: list[tuple[str, PendingState]]) -> None:
        """Predictions of `model` awaiting labels recorded before a restart (oldest first);
        kept until the model is monitored when it is not yet."""
        monitor = self._monitors.get(model)
        if monitor is not None:
            monitor.restore_pending(states)
        else:
            self._restored.setdefault(model, []).extend(states)

    def drop(self, models: Iterable[str]) -> list[str]:
        """Forget these models' monitors and restored states (another instance monitors them
        now: their partition moved); the ones that were known, in the order given."""
        dropped = []
        for model in models:
            known = self._monitors.pop(model, None) is not None
            if self._restored.pop(model, None) is not None or known:
                dropped.append(model)
        return dropped

    def drain_pending(self, model: str) -> list[tuple[str, PendingState]]:
        """Changes of `model`'s predictions awaiting labels since the last drain."""
        monitor = self._monitors.get(model)
        return monitor.drain_pending() if monitor is not None else []

    def knows(self, model: str) -> bool:
        return model in self._monitors

    def models(self) -> list[str]:
        return list(self._monitors)

    def has_restored(self, model: str) -> bool:
        """Whether `model` has restored states waiting for its monitor."""
        return model in self._restored

    def restored_models(self) -> list[str]:
        """Models with restored states that are not monitored yet."""
        return list(self._restored)

    def version(self, model: str) -> str | None:
        monitor = self._monitors.get(model)
        return monitor.version if monitor else None

    def get(self, model: str) -> ModelMonitor:
        monitor = self._monitors.get(model)
        if monitor is None:
            known = ", ".join(sorted(self._monitors)) or "none"
            raise NotFound(
                f"model {model!r} is not monitored (no reference profile loaded yet); "
                f"monitored: {known}"
            )
        return monitor

    def observe(
        self, model: str, version: str, frame: pd.DataFrame, now: float
    ) -> DriftDecision | None:
        return self.get(model).observe(version, frame, now)

    def observe_labels(
        self, model: str, request_ids: list[str], labels: list[str], now: float
    ) -> DriftDecision | None:
        return self.get(model).observe_labels(request_ids, labels, now)

    def report(self, model: str, now: float | None = None) -> DriftReport:
        return self.get(model).report(now)

    def decisions(self, model: str = "") -> list[DriftDecision]:
        """Decisions emitted since start, for one model or (empty name) all, oldest first."""
        if model:
            return list(self.get(model).decisions)
        found = [d for m in self._monitors.values() for d in m.decisions]
        return sorted(found, key=lambda d: d.decided_at)
