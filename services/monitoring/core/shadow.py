"""Shadow evidence: a model's shadow version and its production (champion) version scored on the
same labelled live requests, reported to the registry, which promotes, rejects or waits.

Shadow prediction logs never reach the drift windows of production; they are kept (bounded) for
the label join. Every `report_every` new labelled pairs the accuracy and macro F1 of both are
sent with ReportShadowEvidence; the registry applies the policy (labels needed, margin).
A regressor (its logged predictions are floating-point numbers) is scored on the same requests
with MAE, RMSE and R² instead, and its paired counts are those of the sign test on the paired
absolute errors (see Evidence).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import structlog
from prometheus_client import Counter

from driftloop.services.monitoring.core.regression import parse_numbers
from driftloop.shared.errors import DriftloopError, Unavailable
from driftloop.shared.estimators import REGRESSION, score
from driftloop.shared.records import ipc_to_table

log = structlog.get_logger(__name__)

REQUEST_ID = "_request_id"
PREDICTION = "_prediction"

SHADOW_ROWS = Counter(
    "driftloop_monitoring_shadow_rows_total",
    "Logged predictions of shadow versions (kept for the label join, not for drift)",
    ["model"],
)
SHADOW_REPORTS = Counter(
    "driftloop_monitoring_shadow_reports_total",
    "Shadow evidence reported to the registry, by its outcome",
    ["model", "outcome"],
)


@dataclass(frozen=True)
class Evidence:
    model: str
    version: str
    champion_version: str
    labelled: int
    shadow_metrics: dict[str, float]
    champion_metrics: dict[str, float]
    shadow_only_right: int = 0
    """Labelled requests only the shadow answered right (paired evidence for McNemar's test);
    for a regressor, the requests where the shadow's absolute error was the smaller of the two
    (the sign test's discordant pairs; ties count on neither side)."""
    champion_only_right: int = 0


@dataclass(frozen=True)
class Verdict:
    """The registry's answer: outcome "waiting", "promoted", "rejected" or "stale"."""

    outcome: str
    reason: str
    still_shadow: bool


def live_metrics(truth: list[str], predicted: list[str]) -> dict[str, float]:
    """Accuracy and macro F1 (over the classes seen in either list, as scikit-learn does)."""
    n = len(truth)
    if n == 0:
        return {}
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    f1s = []
    for c in sorted(set(truth) | set(predicted)):
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, predicted, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": correct / n, "f1_macro": sum(f1s) / len(f1s)}


@dataclass
class Comparison:
    """One shadow version against the production version whose answers it shadows."""

    model: str
    version: str
    champion_version: str = ""
    capacity: int = 100_000
    shadow: collections.OrderedDict[str, str] = field(default_factory=collections.OrderedDict)
    champion: collections.OrderedDict[str, str] = field(default_factory=collections.OrderedDict)
    truth: list[str] = field(default_factory=list)
    shadow_predicted: list[str] = field(default_factory=list)
    champion_predicted: list[str] = field(default_factory=list)
    reported_at: int = 0
    task: str = "classification"
    """"regression" once either side logged floating-point predictions."""

    def remember(
        self, side: collections.OrderedDict[str, str], ids: list[str], preds: list[str]
    ) -> None:
        """Keep answers by request id; the oldest are forgotten beyond `capacity`."""
        side.update(zip(ids, preds, strict=True))
        while len(side) > self.capacity:
            side.popitem(last=False)

    def restart(self, champion_version: str) -> None:
        """Production changed: the evidence so far compared with another version."""
        self.champion_version = champion_version
        self.champion.clear()
        self.truth, self.shadow_predicted, self.champion_predicted = [], [], []
        self.reported_at = 0

    def join(self, request_ids: list[str], labels: list[str]) -> int:
        """Pair labels with both answers of the same request; returns the pairs added."""
        added = 0
        numeric = parse_numbers(labels) if self.task == REGRESSION else None
        for i, (request_id, label) in enumerate(zip(request_ids, labels, strict=True)):
            if request_id not in self.shadow or request_id not in self.champion:
                continue
            if numeric is not None and not np.isfinite(numeric[i]):
                continue  # not a number: left out, both answers stay for a valid label
            self.truth.append(label)
            self.shadow_predicted.append(self.shadow.pop(request_id))
            self.champion_predicted.append(self.champion.pop(request_id))
            added += 1
        return added

    def evidence(self) -> Evidence:
        if self.task == REGRESSION:
            return self._regression_evidence()
        pairs = zip(self.truth, self.shadow_predicted, self.champion_predicted, strict=True)
        shadow_only = champion_only = 0
        for truth, shadow, champion in pairs:
            shadow_only += shadow == truth != champion
            champion_only += champion == truth != shadow
        return Evidence(
            self.model,
            self.version,
            self.champion_version,
            len(self.truth),
            live_metrics(self.truth, self.shadow_predicted),
            live_metrics(self.truth, self.champion_predicted),
            shadow_only,
            champion_only,
        )

    def _regression_evidence(self) -> Evidence:
        """MAE, RMSE and R² of both sides on the pairs both answered with a number, and the
        sign test's counts of the paired absolute errors."""
        truth = parse_numbers(self.truth)
        shadow, champion = (
            parse_numbers(self.shadow_predicted),
            parse_numbers(self.champion_predicted),
        )
        rows = np.isfinite(truth) & np.isfinite(shadow) & np.isfinite(champion)
        truth, shadow, champion = truth[rows], shadow[rows], champion[rows]
        shadow_error, champion_error = np.abs(truth - shadow), np.abs(truth - champion)
        return Evidence(
            self.model,
            self.version,
            self.champion_version,
            int(rows.sum()),
            score(truth, shadow, REGRESSION) if len(truth) else {},
            score(truth, champion, REGRESSION) if len(truth) else {},
            int((shadow_error < champion_error).sum()),
            int((champion_error < shadow_error).sum()),
        )


class ShadowComparisons:
    """Pure bookkeeping of every model's shadow comparison (no I/O)."""

    def __init__(self, *, capacity: int = 100_000, report_every: int = 50) -> None:
        self.capacity = capacity
        self.report_every = report_every
        self._by_model: dict[str, Comparison] = {}
        self._done: set[tuple[str, str]] = set()

    def get(self, model: str) -> Comparison | None:
        return self._by_model.get(model)

    def add_shadow(
        self, model: str, version: str, ids: list[str], preds: list[str], numeric: bool = False
    ) -> None:
        if (model, version) in self._done:
            return  # decided already; late logs of it are ignored
        current = self._by_model.get(model)
        if current is None or current.version != version:
            current = self._by_model[model] = Comparison(model, version, capacity=self.capacity)
        current.task = REGRESSION if numeric else current.task
        current.remember(current.shadow, ids, preds)

    def add_production(
        self, model: str, version: str, ids: list[str], preds: list[str], numeric: bool = False
    ) -> None:
        current = self._by_model.get(model)
        if current is None:
            return  # no shadow: production's answers are the monitor's business only
        if current.champion_version != version:
            current.restart(version)
        current.task = REGRESSION if numeric else current.task
        current.remember(current.champion, ids, preds)

    def add_labels(self, model: str, ids: list[str], labels: list[str]) -> Evidence | None:
        """Join labels; the evidence when `report_every` new pairs arrived since the last one."""
        current = self._by_model.get(model)
        if current is None or not current.champion_version:
            return None
        current.join(ids, labels)
        if len(current.truth) - current.reported_at < self.report_every:
            return None
        return current.evidence()

    def settle(self, evidence: Evidence, verdict: Verdict) -> None:
        """Apply the registry's answer: keep waiting, restart, or forget a decided shadow."""
        current = self._by_model.get(evidence.model)
        if current is None or current.version != evidence.version:
            return
        if verdict.outcome == "waiting":
            current.reported_at = evidence.labelled
        elif verdict.still_shadow:
            current.restart("")  # stale: compared with a production the registry no longer has
        else:
            self._done.add((evidence.model, evidence.version))
            del self._by_model[evidence.model]


class LoggedPredictions(Protocol):
    """A prediction log as the bus carries it (the PredictionLog event's fields)."""

    model: str
    version: str
    shadow: bool
    arrow_ipc: bytes


class LabelledRequests(Protocol):
    """A batch of labels as the bus carries it (the LabelBatch event's fields)."""

    model: str
    request_ids: Sequence[str]
    labels: Sequence[str]


class EvidenceSink(Protocol):
    async def report(self, evidence: Evidence) -> Verdict:
        """Hand the evidence to the registry; raises Unavailable when it cannot be reached,
        PermissionDenied when it refuses this process's token."""
        ...


class ShadowMonitor:
    """The event handler's hook: feeds prediction logs and labels, reports evidence."""

    def __init__(self, comparisons: ShadowComparisons, sink: EvidenceSink) -> None:
        self.comparisons = comparisons
        self._sink = sink

    async def on_predictions(self, logged: LoggedPredictions) -> bool:
        """True when the log was a shadow's (the monitor's windows must not see it)."""
        if not logged.shadow and self.comparisons.get(logged.model) is None:
            return False
        ids, preds, numeric = await asyncio.to_thread(_answers, logged.arrow_ipc)
        if logged.shadow:
            self.comparisons.add_shadow(logged.model, logged.version, ids, preds, numeric)
            SHADOW_ROWS.labels(logged.model).inc(len(ids))
            return True
        self.comparisons.add_production(logged.model, logged.version, ids, preds, numeric)
        return False

    async def on_labels(self, batch: LabelledRequests) -> None:
        evidence = self.comparisons.add_labels(
            batch.model, list(batch.request_ids), list(batch.labels)
        )
        if evidence is None:
            return
        try:
            verdict = await self._sink.report(evidence)
        except Unavailable as exc:  # labels are not lost: the next batch reports again
            log.warning("shadow_evidence_not_reported", model=evidence.model, error=str(exc))
            return
        except DriftloopError as exc:
            # a refusal (wrong token) or a registry bug: no outage to wait out, so an error;
            # the evidence is kept and the label batch still feeds the drift monitor
            log.error(
                "shadow_evidence_refused",
                model=evidence.model,
                error=str(exc),
                error_type=type(exc).__name__,
            )
            return
        self.comparisons.settle(evidence, verdict)
        SHADOW_REPORTS.labels(evidence.model, verdict.outcome).inc()
        log.info(
            "shadow_evidence_reported",
            model=evidence.model,
            version=evidence.version,
            champion_version=evidence.champion_version,
            labelled=evidence.labelled,
            outcome=verdict.outcome,
            reason=verdict.reason,
        )


def _answers(arrow_ipc: bytes) -> tuple[list[str], list[str], bool]:
    """Request ids, predictions as text, and whether they are a regressor's (floating point)."""
    table = ipc_to_table(arrow_ipc)
    if REQUEST_ID not in table.column_names or PREDICTION not in table.column_names:
        return [], [], False
    ids = [str(x) for x in table.column(REQUEST_ID).to_pylist()]
    column = table.column(PREDICTION)
    numeric = pa.types.is_floating(column.type)
    return ids, [str(x) for x in column.to_pylist()], numeric
