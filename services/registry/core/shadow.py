"""Shadow mode's live decision: monitoring's evidence (the shadow and the champion scored on the
same labelled live requests) is judged by the policy, then the shadow is promoted or rejected
with its audit records and events, inside the caller's transaction.

Live evidence is accuracy counts, so only classification has any: a regression spec cannot ask
for shadow mode (validate_spec) and a regression promotion opens no probation
(decisions.start_probation); evidence lacking the policy metric never rolls anything back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from driftloop.services.registry.core import decisions, events
from driftloop.services.registry.core.domain import Model, ModelVersion
from driftloop.services.registry.core.policy import LiveVerdict, decide_live, decide_probation
from driftloop.services.registry.core.store import SHADOW, RegistryTx
from driftloop.shared.errors import InvalidInput, NotFound
from driftloop.shared.paired import PairedComparison, from_counts


@dataclass(frozen=True)
class ShadowEvidence:
    """What monitoring measured on labelled live requests both versions answered."""

    model: str
    version: str
    champion_version: str
    labelled: int
    shadow_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    actor: str = "monitoring"
    shadow_only_right: int = 0
    champion_only_right: int = 0

    def comparison(self, metric: str, confidence: float) -> PairedComparison | None:
        """The paired accuracy comparison (shadow minus champion), when the counts allow it:
        zero discordant pairs with different accuracies means a reporter that sends none."""
        if metric != "accuracy" or self.labelled <= 0 or "accuracy" not in self.shadow_metrics:
            return None
        discordant = self.shadow_only_right + self.champion_only_right
        same = self.shadow_metrics["accuracy"] == self.champion_metrics.get("accuracy")
        if discordant == 0 and not same:
            return None
        return from_counts(
            self.shadow_only_right,
            self.champion_only_right,
            self.labelled,
            candidate=self.shadow_metrics["accuracy"],
            confidence=confidence,
        )


@dataclass(frozen=True)
class EvidenceOutcome:
    outcome: str
    """"waiting", "promoted", "rejected" or "stale" (see ReportShadowEvidence)."""
    reason: str
    min_labels: int
    version: ModelVersion
    decided: bool = False
    """True when this evidence made the decision (not a repeat about a decided version)."""


def apply_evidence(tx: RegistryTx, model: Model, e: ShadowEvidence) -> EvidenceOutcome:
    """Promote, reject or keep waiting; evidence about a version that is no longer the shadow,
    or measured against another production version, changes nothing ("stale")."""
    if e.labelled < 0:
        raise InvalidInput(f"labelled must not be negative, got {e.labelled}")
    target = tx.version(model.name, e.version)
    if target is None:
        raise NotFound(f"model {model.name} has no version {e.version!r}")
    policy = model.spec.policy
    need = policy.shadow_min_labels

    def outcome(
        kind: str, reason: str, version: ModelVersion = target, decided: bool = False
    ) -> EvidenceOutcome:
        return EvidenceOutcome(kind, reason, need, version, decided)

    if tx.probation(model.name) == target.version and target.status != "production":
        return _probation(tx, model, target, e, outcome)
    if target.status != "shadow":
        kind = {"production": "promoted", "rejected": "rejected"}.get(target.status, "stale")
        return outcome(kind, f"version {e.version} is {target.status}, no longer the shadow")
    champion = tx.production(model.name)
    current = champion.version if champion is not None else ""
    if champion is None or current != e.champion_version:
        return outcome(
            "stale",
            f"the evidence compares with version {e.champion_version or 'none'} but "
            f"production is version {current or 'none'}; measure again",
        )
    comparison = e.comparison(policy.metric, policy.confidence)
    verdict = decide_live(policy, e.labelled, e.shadow_metrics, e.champion_metrics, comparison)
    if verdict.outcome == "waiting":
        return outcome("waiting", verdict.reason)
    ids = {
        "correlation_id": target.lineage.correlation_id,
        "causation_id": target.lineage.causing_event_id,
    }
    tx.add_audit(
        model.name,
        target.version,
        "shadow_evidence",
        verdict.reason,
        {
            "labelled": e.labelled,
            "shadow_metrics": e.shadow_metrics,
            "champion_metrics": e.champion_metrics,
            "champion_version": e.champion_version,
            "reported_by": e.actor,
            "comparison": comparison.to_dict() if comparison else None,
        },
        ids["correlation_id"],
    )
    if verdict.outcome == "promoted":
        promoted = decisions.move_production(
            tx, target, champion, verdict.reason, "policy", "promote", ids
        )
        return outcome("promoted", verdict.reason, promoted, decided=True)
    decisions.clear_shadow(tx, target, verdict.reason, "policy")
    tx.set_status(model.name, target.version, "rejected")
    tx.add_audit(model.name, target.version, "reject", verdict.reason, {}, ids["correlation_id"])
    decisions.outbox(
        tx,
        events.ModelRejected(model=model.name, version=target.version, reason=verdict.reason),
        **ids,
    )
    return outcome("rejected", verdict.reason, replace(target, status="rejected"), decided=True)


def _probation(
    tx: RegistryTx,
    model: Model,
    guard: ModelVersion,
    e: ShadowEvidence,
    outcome: Callable[..., EvidenceOutcome],
) -> EvidenceOutcome:
    """Live evidence about a probation's guard (the previous production version): roll back
    when the new version is significantly worse, drop the guard when it is not."""
    production = tx.production(model.name)
    if production is None or production.version != e.champion_version:
        return outcome(
            "stale",
            f"the evidence compares with version {e.champion_version or 'none'} but production "
            f"is version {production.version if production else 'none'}; measure again",
        )
    policy = model.spec.policy
    comparison = e.comparison(policy.metric, policy.confidence)
    verdict: LiveVerdict = decide_probation(
        policy, e.labelled, e.shadow_metrics, e.champion_metrics, comparison
    )
    if verdict.outcome == "waiting":
        return outcome("waiting", verdict.reason)
    ids = {
        "correlation_id": production.lineage.correlation_id,
        "causation_id": production.lineage.causing_event_id,
    }
    tx.add_audit(
        model.name,
        production.version,
        "probation_evidence",
        verdict.reason,
        {
            "labelled": e.labelled,
            "previous_version": guard.version,
            "previous_metrics": e.shadow_metrics,
            "production_metrics": e.champion_metrics,
            "comparison": comparison.to_dict() if comparison else None,
            "reported_by": e.actor,
        },
        ids["correlation_id"],
    )
    if verdict.outcome == "rollback":
        tx.add_alias(model.name, "", guard.version, verdict.reason, "policy", "clear", alias=SHADOW)
        restored = decisions.move_production(
            tx, guard, production, verdict.reason, "policy", "rollback", ids
        )
        return outcome("promoted", verdict.reason, restored, decided=True)
    decisions.end_probation(tx, guard, verdict.reason)
    return outcome("rejected", verdict.reason, guard, decided=True)
