"""Shadow mode's live decision: monitoring's evidence (the shadow and the champion scored on the
same labelled live requests) is judged by the policy, then the shadow is promoted or rejected
with its audit records and events, inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from driftloop.services.registry.core import decisions, events
from driftloop.services.registry.core.domain import Model, ModelVersion
from driftloop.services.registry.core.policy import decide_live
from driftloop.services.registry.core.store import RegistryTx
from driftloop.shared.errors import InvalidInput, NotFound


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
    verdict = decide_live(policy, e.labelled, e.shadow_metrics, e.champion_metrics)
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
