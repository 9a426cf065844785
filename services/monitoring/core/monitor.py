"""The per-model monitor: a sliding window of live rows, periodic drift tests, debounced episodes.

Pure domain logic (no Kafka, no gRPC): the event handler feeds it prediction logs and
deployments; it answers with drift decisions to publish and with reports for the API.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import numpy as np
import pandas as pd
import structlog

from driftloop.services.monitoring.core import label_change
from driftloop.services.monitoring.core.decision import DriftDecision, DriftEpisode, explain
from driftloop.services.monitoring.core.drift import (
    DriftPolicy,
    FeatureDrift,
    PreparedReference,
    WindowEvaluation,
)
from driftloop.services.monitoring.core.early_labels import EarlyLabels
from driftloop.services.monitoring.core.performance import (
    LABEL,
    PendingState,
    PerformanceTracker,
    PredictionJoin,
    as_texts,
)
from driftloop.services.monitoring.core.rebase import (
    change_since,
    rebased_profile,
    restore_samples,
)
from driftloop.services.monitoring.core.recent import RecentValues
from driftloop.services.monitoring.core.regression import (
    LabelTracker,
    RegressionTracker,
    numeric_labels,
    tracker_for,
)
from driftloop.services.monitoring.core.report import (
    DriftReport,
    EpisodeState,
    model_distributions,
    performance_summary,
)
from driftloop.services.monitoring.core.window import TS, LiveWindow, time_span
from driftloop.shared.profile import PREDICTION, ReferenceProfile

log = structlog.get_logger(__name__)

CHANGE_SHRINK = 0.8
"""The share of the GLR's estimate of the rows since the change that a retrain's rows may reach
back: its grid steps by 1.2, so the true change lies within about that factor; shrinking keeps
older rows out."""
CHANGE_LOOKBACK = 4096
"""Labelled rows whose join time is kept for the change point (bounded per model)."""
REQUEST_ID = "_request_id"

# Why feature drift rarely cries wolf over thousands of evaluations: Bonferroni (alpha / number
# of tests) bounds the chance that ANY test of one evaluation fires on a stationary window by
# alpha; persistence then asks for drift in `persistence` consecutive evaluations (a one-window
# fluke is not enough, real drift only grows as the window fills). The error-rate detectors are
# sequential by construction (performance.py, sequential.py: thresholds set for an in-control
# average run length), so they need neither. An open episode mutes further decisions. A
# fleet's partitions share one budget among them: core/fleet_thresholds.py.


class ModelMonitor:
    """Watches one model's live rows (and their labels) against its current version's reference."""

    def __init__(
        self,
        model: str,
        policy: DriftPolicy,
        version: str,
        profile: ReferenceProfile,
        *,
        journal: bool = False,
    ) -> None:
        """`journal`: record every change of the predictions awaiting labels (`drain_pending`),
        for a changelog that restores them after a restart (`restore_pending`)."""
        self.model = model
        self.policy = policy
        self.decisions: list[DriftDecision] = []
        """Every decision emitted since this monitor was built (across versions)."""
        self.rows_ignored = 0
        """Rows logged for versions other than the current one."""
        self._unmatched = 0
        """Labels of another version, or forgotten while waiting for their prediction."""
        self.labels_duplicate = 0
        """Labels of a request id already joined (sent again); never counted twice."""
        self.labels_invalid = 0
        """A regressor's labels that are not finite decimal numbers: counted, logged, ignored."""
        self._join = PredictionJoin(policy.max_pending_predictions, journal=journal)
        self._early = EarlyLabels()
        """Labels that arrived before their prediction's log; they join when it arrives."""
        self.last_episode: DriftEpisode | None = None
        """The latest episode of any version (kept across deployments, for the report)."""
        self.population_tests = True
        """False for a fleet's global model once partition models answer some of its rows:
        its live rows are then a sub-population of its reference (ModelMonitors.fallback)."""
        self._lock = threading.Lock()  # observe() runs in a worker thread, reports on the loop
        self._reset(version, profile)

    def _reset(self, version: str, profile: ReferenceProfile) -> None:
        self.version = version
        self._reference = PreparedReference(profile)
        self.profile = self._reference.slim(profile)
        self.rows_seen = 0
        self.episode: DriftEpisode | None = None
        self.latest: WindowEvaluation | None = None
        self.evaluated_at: float | None = None
        columns = [f.name for f in profile.features] + [PREDICTION, TS]
        self.window = LiveWindow(self.policy.window_rows, self.policy.window_seconds, columns)
        self._streak = 0
        p = self.policy
        self.performance: LabelTracker = tracker_for(profile, p)
        self._label_ts = RecentValues(p.label_window_rows)
        self._joined_at = RecentValues(CHANGE_LOOKBACK)
        """When each recent labelled row's label was joined (for the change point's time)."""
        self._label_codes = label_change.LabelCodes(CHANGE_LOOKBACK)
        """The same rows' labels (a classifier's: where a label-prior shift began)."""
        self._labels_since_test = 0
        self._prior_streak = 0

    def switch(self, version: str, profile: ReferenceProfile) -> None:
        """A new version is deployed: new reference, empty window, counters reset, episode closed.

        The reset is the cool-down: the next evaluation waits for `min_rows` fresh rows, and
        performance restarts from the new version's reference (or a fresh burn-in).
        """
        with self._lock:
            self._reset(version, profile)

    def rebase(self) -> bool:
        """The registry found the champion as good on post-drift data (core/rebase.py): compare
        live rows with the live window from now on, as after a deployment of the same version
        (episode closed, cool-down). False when the window holds fewer than min_rows rows."""
        with self._lock:
            window = self.window.frame()
            if len(window) < self.policy.min_rows:
                return False
            target = getattr(self.performance, "target_sample", None)
            full = restore_samples(self.profile, self._reference.samples, target)
            self._reset(self.version, rebased_profile(full, window, self.performance.window()[1]))
            return True

    def observe(self, version: str, frame: pd.DataFrame, now: float) -> DriftDecision | None:
        """Add logged rows; evaluate at every `eval_every`-th row once `min_rows` were seen.

        The frame is cut at the evaluation points, so decisions do not depend on how rows were
        batched. Rows with a request id are kept (bounded) for labels to join. Returns a
        decision to publish, or None.
        """
        with self._lock:
            if version != self.version:
                self.rows_ignored += len(frame)
                return None
            self._remember(frame)
            decision = self._join_early(frame, now)
            start = 0
            while start < len(frame):
                take = min(len(frame) - start, self._rows_to_next_evaluation())
                self._append(frame.iloc[start : start + take])
                start += take
                if self._due():
                    decision = self._evaluate(now) or decision
            return decision

    def observe_labels(
        self, request_ids: list[str], labels: list[str], now: float
    ) -> DriftDecision | None:
        """Join labels to logged predictions of the current version; track performance.

        Decides on an error-rate shift (CUSUM crossing) or a persistent label-prior change,
        when the policy lets those signals trigger. Returns a decision to publish, or None.
        A regressor's labels that are not finite numbers are counted (`labels_invalid`),
        logged and dropped before anything else sees them: no join, window or detector.
        """
        with self._lock:
            if self.profile.task == "regression":
                request_ids, labels = self._numeric(request_ids, labels)
            return self._labels(request_ids, labels, now, hold=True)

    def _numeric(self, request_ids: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
        ids, kept, invalid = numeric_labels(request_ids, labels)
        if invalid:
            self.labels_invalid += len(invalid)
            log.warning(
                "labels_not_numbers",
                model=self.model,
                version=self.version,
                invalid=len(invalid),
                example=invalid[0][:80],
                total_invalid=self.labels_invalid,
            )
        return ids, kept

    def _labels(
        self, request_ids: list[str], labels: list[str], now: float, *, hold: bool
    ) -> DriftDecision | None:
        before = self._join.duplicates
        joined = self._join.take(request_ids)
        duplicates = self._join.duplicates - before
        self.labels_duplicate += duplicates
        keep, other = [], 0
        for request_id, hit, label in zip(request_ids, joined, labels, strict=True):
            if hit is None:
                if hold and not self._join.was_joined(request_id):
                    self._early.hold(request_id, label)
            elif hit[0] == self.version:
                keep.append((hit[1], label, hit[2]))
            else:
                other += 1
        self._unmatched += other
        if not keep:
            return None
        predictions, truth, ts = (list(column) for column in zip(*keep, strict=True))
        self._label_ts.extend(ts)
        self._joined_at.extend([now] * len(keep))
        if isinstance(self.performance, PerformanceTracker):
            self._label_codes.extend(truth)
        if isinstance(self.performance, RegressionTracker):
            crossed = self.performance.observe(predictions, truth, ts)
        else:
            crossed = self.performance.observe(predictions, truth)
        if crossed is not None and "accuracy" in self.policy.triggers:
            end = self._change_since(len(keep) - 1 - crossed, ts[crossed])
            return self._decide(now, self._performance_evidence(self.performance.fired), end)
        return self._test_label_prior(len(keep), now, ts[-1])

    @property
    def labels_unmatched(self) -> int:
        """Labels not joined: of an unknown request id (still waiting for its prediction's log,
        or forgotten), or of another version."""
        return self._unmatched + self._early.forgotten + len(self._early)

    def _join_early(self, frame: pd.DataFrame, now: float) -> DriftDecision | None:
        """Labels that were waiting for these logged predictions join now."""
        if not len(self._early) or REQUEST_ID not in frame.columns:
            return None
        ids, labels = self._early.take(frame[REQUEST_ID].astype(str))
        return self._labels(ids, labels, now, hold=False) if ids else None

    def take_early(self, request_ids: list[str]) -> tuple[list[str], list[str]]:
        """The held early labels of these ids, removed (a fleet's partition logged them)."""
        with self._lock:
            return self._early.take(request_ids)

    def forget(self, request_ids: list[str]) -> None:
        """Forget these predictions awaiting labels (and ids joined): evicted elsewhere."""
        with self._lock:
            self._join.forget(request_ids)

    def compact(self) -> None:
        """Merge the live window's chunks (an idle monitor keeps one small frame)."""
        with self._lock:
            self.window.compact()

    def report(self, now: float | None = None) -> DriftReport:
        now = time.time() if now is None else now
        with self._lock:
            latest = self.latest
            window = self.window.frame()
            start, end = time_span(window, now) if len(window) else (None, None)
            return DriftReport(
                model=self.model,
                version=self.version,
                window_rows=latest.live_rows if latest else len(self.window),
                reference_rows=self.profile.rows,
                features=(*(latest.features if latest else ()), *self._perf_evidence()),
                drift_share=latest.drift_share if latest else 0.0,
                drifted=latest.drifted if latest else False,
                open_episode_id=self.episode.episode_id if self.episode else "",
                evaluated_at=self.evaluated_at,
                rows_seen=self.rows_seen,
                window_start=start,
                window_end=end,
                distributions=model_distributions(
                    self.profile, window, self.performance, self._reference.samples
                ),
                performance=performance_summary(
                    self.performance,
                    self.labels_unmatched,
                    len(self._join),
                    duplicate=self.labels_duplicate,
                    invalid=self.labels_invalid,
                ),
                episode=self._episode_state(now),
                rows_ignored=self.rows_ignored,
            )

    def drain_pending(self) -> list[tuple[str, PendingState]]:
        """Changes of the predictions awaiting labels since the last drain, oldest first."""
        with self._lock:
            return self._join.drain()

    def restore_pending(self, states: list[tuple[str, PendingState]]) -> None:
        """Predictions awaiting labels (and ids already joined) recorded before a restart."""
        with self._lock:
            self._join.restore(states)

    def resume(self, episode_id: str, version: str, opened_at: float) -> None:
        """Restore an episode recorded before a restart, so it is not decided a second time."""
        with self._lock:
            episode = DriftEpisode(episode_id=episode_id, opened_at=opened_at)
            if self.last_episode is None or self.last_episode.opened_at <= opened_at:
                self.last_episode = episode
            if version == self.version:
                self.episode = episode

    def _perf_evidence(self) -> tuple[FeatureDrift, ...]:
        return self.performance.evidence(self.policy.alpha)

    def _episode_state(self, now: float) -> EpisodeState:
        last = self.last_episode
        cooldown = max(0, self.policy.min_rows - self.rows_seen)
        if last is None:
            return EpisodeState(cooldown_rows_left=cooldown)
        is_open = self.episode is not None and self._episode_blocks(now)
        reopens = last.opened_at + self.policy.episode_timeout_s - now if is_open else 0.0
        return EpisodeState(last.episode_id, last.opened_at, is_open, cooldown, max(0.0, reopens))

    def _remember(self, frame: pd.DataFrame) -> None:
        if REQUEST_ID not in frame.columns or PREDICTION not in frame.columns:
            return
        ts = frame[TS].to_numpy(dtype=float) if TS in frame.columns else np.zeros(len(frame))
        self._join.add(
            self.version,
            as_texts(frame[REQUEST_ID]),
            as_texts(frame[PREDICTION]),
            ts.tolist(),
        )

    def _rows_to_next_evaluation(self) -> int:
        p = self.policy
        if self.rows_seen < p.min_rows:
            return p.min_rows - self.rows_seen
        return p.eval_every - (self.rows_seen - p.min_rows) % p.eval_every

    def _due(self) -> bool:
        p = self.policy
        return self.rows_seen >= p.min_rows and (self.rows_seen - p.min_rows) % p.eval_every == 0

    def _append(self, chunk: pd.DataFrame) -> None:
        self.window.append(chunk)
        self.rows_seen += len(chunk)

    def _evaluate(self, now: float) -> DriftDecision | None:
        window = self.window.frame()
        if len(window) < self.policy.min_rows or not self.population_tests:
            return None  # a time window can hold too few rows to test
        evaluation = self._reference.evaluate(window, self.policy.alpha)
        self.latest, self.evaluated_at = evaluation, now
        self._streak = self._streak + 1 if self._triggers(evaluation) else 0
        if self._streak < self.policy.persistence:
            return None
        start, end = time_span(window, now)
        evidence = (*evaluation.features, *self.performance.evidence(self.policy.alpha))
        return self._decide(now, evidence, end, start=start, live_rows=evaluation.live_rows)

    def _triggers(self, evaluation: WindowEvaluation) -> bool:
        allowed = self.policy.triggers
        return any(
            f.drifted and ("prediction" if f.feature == PREDICTION else "features") in allowed
            for f in evaluation.features
        )

    def _test_label_prior(self, rows: int, now: float, end: float) -> DriftDecision | None:
        self._labels_since_test += rows
        if self._labels_since_test < self.policy.eval_every or not self.population_tests:
            return None
        self._labels_since_test = 0
        prior = self.performance.label_prior(self.policy.alpha)
        self._prior_streak = self._prior_streak + 1 if prior and prior.drifted else 0
        if (
            self._prior_streak < self.policy.persistence
            or "label_prior" not in self.policy.triggers
        ):
            return None
        return self._decide(now, self._performance_evidence(LABEL), self._label_change(end))

    def _label_change(self, alarm_ts: float) -> float:
        """When a label-prior shift began (label_change.py), for the rows a retrain may use;
        the alarm row's time without a reference."""
        tracker = self.performance
        if isinstance(tracker, RegressionTracker):
            _, values = tracker.window()
            rows = label_change.numeric_change_rows(values, tracker.target_sample)
        elif isinstance(tracker, PerformanceTracker) and tracker.reference is not None:
            reference = tracker.reference
            rows = self._label_codes.change_rows(reference.label_frequencies, reference.rows)
        else:
            return alarm_ts
        return change_since(rows, self._joined_at, 0, alarm_ts, CHANGE_SHRINK)

    def _performance_evidence(self, fired: str) -> tuple[FeatureDrift, ...]:
        """The latest feature tests plus performance figures, `fired` marked as drifted."""
        perf = tuple(
            dataclasses.replace(f, drifted=True) if f.feature == fired else f
            for f in self.performance.evidence(self.policy.alpha)
        )
        return (*(self.latest.features if self.latest else ()), *perf)

    def _decide(
        self,
        now: float,
        evidence: tuple[FeatureDrift, ...],
        end: float,
        *,
        start: float | None = None,
        live_rows: int | None = None,
    ) -> DriftDecision | None:
        """Open an episode unless one is open; every signal shares the episode (one retrain)."""
        if self._episode_blocks(now):
            return None
        self._streak = self._prior_streak = 0
        self.episode = DriftEpisode(episode_id=uuid.uuid4().hex, opened_at=now)
        self.last_episode = self.episode
        tested = [f for f in evidence if f.test in ("ks", "chi2")]
        decision = DriftDecision(
            model=self.model,
            version=self.version,
            episode_id=self.episode.episode_id,
            features=evidence,
            drift_share=sum(f.drifted for f in tested) / len(tested) if tested else 0.0,
            window_start=min(self._label_ts, default=end) if start is None else start,
            window_end=end,
            live_rows=len(self.window) if live_rows is None else live_rows,
            reference_rows=self.profile.rows,
            decided_at=now,
            reasons=explain(evidence),
        )
        self.decisions.append(decision)
        return decision

    def _change_since(self, after_alarm: int, alarm_ts: float) -> float:
        rows, joined = self.performance.change_rows, self._joined_at
        return change_since(rows, joined, after_alarm, alarm_ts, CHANGE_SHRINK)

    def _episode_blocks(self, now: float) -> bool:
        if self.episode is None:
            return False
        return now - self.episode.opened_at < self.policy.episode_timeout_s


def __getattr__(name: str) -> object:
    """ModelMonitors moved to core/monitors.py; imports of it from here keep working."""
    if name == "ModelMonitors":
        from driftloop.services.monitoring.core.monitors import ModelMonitors

        return ModelMonitors
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
