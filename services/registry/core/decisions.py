"""How a registry decision is written: the policy's verdict on a candidate, the production alias
move, its audit record and its outbox events, all inside the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import asdict, replace
from typing import Any

from driftloop.services.registry.core import events
from driftloop.services.registry.core.domain import (
    LIVE_EVIDENCE_TASKS,
    Candidate,
    Model,
    ModelVersion,
)
from driftloop.services.registry.core.policy import Decision, decide
from driftloop.services.registry.core.store import SHADOW, RegistryTx
from driftloop.shared.errors import InvalidInput
from driftloop.shared.estimators import task_of


def decision_for(model: Model, c: Candidate, champion: ModelVersion | None) -> Decision:
    if model.spec.policy.metric not in c.metrics:
        raise InvalidInput(
            f"candidate metrics lack {model.spec.policy.metric!r} (the policy "
            f"metric of model {model.name}); got {sorted(c.metrics)}"
        )
    if champion is not None and c.champion_version != champion.version:
        # the candidate was scored against another champion (or none): not comparable
        return Decision(
            False,
            f"champion is version {champion.version} but the candidate was "
            f"compared with {c.champion_version or 'no champion'}; retrain",
        )
    if champion is None:
        return decide(model.spec.policy, c.metrics, None)
    return decide(
        model.spec.policy,
        c.metrics,
        c.champion_metrics,
        c.slice_metrics,
        c.champion_slice_metrics,
        c.comparison,
    )


def status_for(promote: bool, waits: bool, shadows: bool = False) -> str:
    if shadows:
        return "shadow"
    if waits:
        return "pending_approval"
    return "production" if promote else "rejected"


def record_decision(
    tx: RegistryTx,
    model: Model,
    c: Candidate,
    version: ModelVersion,
    decision: Decision,
    waits: bool,
    champion: ModelVersion | None,
    *,
    shadows: bool = False,
) -> None:
    """The audit records and outbox events of one registration, in its transaction."""
    number = version.version
    ids = {"correlation_id": c.correlation_id, "causation_id": c.causation_id}
    policy = model.spec.policy
    tx.add_audit(
        c.model,
        number,
        "register",
        decision.reason,
        {
            "run_id": c.run_id,
            "metrics": c.metrics,
            "champion_metrics": c.champion_metrics,
            "champion_version": c.champion_version,
            "policy": asdict(policy),
            **_slice_details(c),
            "spec_version": c.lineage.spec_version,
            "comparison": c.comparison.to_dict() if c.comparison else None,
            "outcome": decision.outcome,
            "rows_needed": decision.rows_needed,
        },
        c.correlation_id,
    )
    outbox(tx, events.ModelRegistered(model=c.model, version=number, run_id=c.run_id), **ids)
    if decision.attention:
        tx.add_audit(c.model, number, "attention", decision.attention, {}, c.correlation_id)
        outbox(
            tx,
            events.ModelNeedsAttention(
                model=c.model,
                version=number,
                reason=decision.attention,
                decision="promoted" if decision.promote else "rejected",
            ),
            **ids,
        )
    if shadows and champion is not None:
        enter_shadow(tx, model, c, version, champion, ids)
    elif waits:
        reason = version.decision_reason
        tx.add_audit(c.model, number, "await_approval", reason, {}, c.correlation_id)
        outbox(
            tx,
            events.ModelPendingApproval(
                model=c.model,
                version=number,
                run_id=c.run_id,
                reason=reason,
                metrics=c.metrics,
                champion_version=c.champion_version,
                champion_metrics=c.champion_metrics,
            ),
            **ids,
        )
    elif decision.promote:
        move_production(tx, version, champion, decision.reason, "policy", "promote", ids)
        if champion is not None and has_live_evidence(model):
            start_probation(tx, version, champion, ids)
    else:
        tx.add_audit(c.model, number, "reject", decision.reason, decision.details, c.correlation_id)
        outbox(
            tx,
            events.ModelRejected(model=c.model, version=number, reason=decision.reason),
            **ids,
        )


def enter_shadow(
    tx: RegistryTx,
    model: Model,
    c: Candidate,
    version: ModelVersion,
    champion: ModelVersion,
    ids: dict[str, str],
) -> None:
    """Shadow mode: the candidate that passed the offline checks becomes the shadow (replacing
    any earlier one); serving runs it beside production until live labels decide."""
    policy = model.spec.policy
    previous = ""
    for old in tx.versions(model=c.model, status="shadow"):
        if old.version == version.version:
            continue
        previous = old.version
        tx.set_status(c.model, old.version, "archived")
        tx.add_audit(
            c.model,
            old.version,
            "shadow_replaced",
            f"replaced as the shadow by version {version.version}",
            {},
            old.lineage.correlation_id,
        )
    reason = version.decision_reason
    tx.add_alias(c.model, version.version, previous, reason, "policy", "shadow", alias=SHADOW)
    tx.add_audit(
        c.model,
        version.version,
        "shadow",
        reason,
        {
            "champion_version": champion.version,
            "previous_shadow_version": previous,
            "shadow_min_labels": policy.shadow_min_labels,
            "shadow_max_labels": policy.shadow_max_labels,
            "margin": policy.margin,
            "metric": policy.metric,
        },
        c.correlation_id,
    )
    outbox(
        tx,
        events.ModelShadowed(
            model=c.model,
            version=version.version,
            previous_shadow_version=previous,
            artifact_uri=version.artifact_uri,
            artifact_sha256=version.artifact_sha256,
            reason=reason,
            champion_version=champion.version,
            run_id=c.run_id,
        ),
        **ids,
    )


def has_live_evidence(model: Model) -> bool:
    """Whether monitoring reports paired live evidence for the model's task (accuracy counts
    on labelled requests both versions answered: classification only, so far)."""
    return task_of(model.spec.task) in LIVE_EVIDENCE_TASKS


def start_probation(
    tx: RegistryTx, promoted: ModelVersion, previous: ModelVersion, ids: dict[str, str]
) -> None:
    """After a policy promotion the previous version runs as a shadow on live traffic, so that
    monitoring's paired live evidence can show the new version worse (then the registry rolls
    back) or not (then the previous version is dropped). Its status stays "archived": only the
    shadow alias (action "probation") marks the guard.

    Only for a task with live evidence (has_live_evidence): a regression model gets no
    probation, since no evidence would ever judge its guard, which would then stay loaded in
    serving and hold the shadow alias for good. Its safety net is the offline paired
    comparison before the promotion, the next drift's retrain, and an operator's Rollback."""
    reason = (
        f"probation of version {promoted.version}: the previous version {previous.version} runs "
        "as a shadow until live labels show the new one is not worse"
    )
    tx.add_alias(promoted.model, previous.version, "", reason, "policy", "probation", alias=SHADOW)
    tx.add_audit(promoted.model, promoted.version, "probation", reason, {}, ids["correlation_id"])
    outbox(
        tx,
        events.ModelShadowed(
            model=promoted.model,
            version=previous.version,
            previous_shadow_version="",
            artifact_uri=previous.artifact_uri,
            artifact_sha256=previous.artifact_sha256,
            reason=reason,
            champion_version=promoted.version,
            run_id=previous.run_id,
        ),
        **ids,
    )


def end_probation(tx: RegistryTx, guard: ModelVersion, reason: str) -> None:
    """Drop the probation's guard: the shadow alias is cleared and serving unloads it (the
    ModelRejected event: the rollback it stood for is declined)."""
    tx.add_alias(guard.model, "", guard.version, reason, "policy", "clear", alias=SHADOW)
    production = tx.production(guard.model)
    at = production.version if production is not None else guard.version
    tx.add_audit(guard.model, at, "probation_ended", reason, {}, guard.lineage.correlation_id)
    outbox(
        tx,
        events.ModelRejected(model=guard.model, version=guard.version, reason=reason),
        correlation_id=guard.lineage.correlation_id,
    )


def clear_shadow(tx: RegistryTx, target: ModelVersion, reason: str, actor: str) -> None:
    """Record that the shadow alias no longer points at `target` (promoted or rejected)."""
    if target.status == "shadow":
        tx.add_alias(target.model, "", target.version, reason, actor, "clear", alias=SHADOW)


def _slice_details(c: Candidate) -> dict[str, Any]:
    if not c.slice_metrics:
        return {}
    return {
        "slice_metrics": [asdict(s) for s in c.slice_metrics],
        "champion_slice_metrics": [asdict(s) for s in c.champion_slice_metrics],
    }


def move_production(
    tx: RegistryTx,
    target: ModelVersion,
    champion: ModelVersion | None,
    reason: str,
    actor: str,
    action: str,
    ids: dict[str, str],
) -> ModelVersion:
    previous = champion.version if champion is not None else ""
    if not ids.get("correlation_id"):
        # an operator's move starts its own chain: the audit record and the event share it
        ids = {**ids, "correlation_id": uuid.uuid4().hex}
    if champion is not None:
        tx.set_status(champion.model, champion.version, "archived")
    clear_shadow(tx, target, reason, actor)
    tx.set_status(target.model, target.version, "production")
    tx.add_alias(target.model, target.version, previous, reason, actor, action)
    tx.add_audit(
        target.model,
        target.version,
        action,
        reason,
        {"actor": actor, "previous_version": previous},
        ids.get("correlation_id", ""),
    )
    outbox(
        tx,
        events.ModelPromoted(
            model=target.model,
            version=target.version,
            previous_version=previous,
            artifact_uri=target.artifact_uri,
            artifact_sha256=target.artifact_sha256,
            reason=reason,
            action=action,
        ),
        **ids,
    )
    return replace(target, status="production")


def outbox(
    tx: RegistryTx,
    payload: events.ModelEvent,
    *,
    correlation_id: str = "",
    causation_id: str = "",
) -> None:
    """Write `payload` to the outbox, stamped now: it is published once the transaction commits
    (keyed by its model, so one model's events keep their order)."""
    event = events.new_event(payload, correlation_id=correlation_id, causation_id=causation_id)
    tx.outbox.add(event)
