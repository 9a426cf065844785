"""How a registry decision is written: the policy's verdict on a candidate, the production alias
move, its audit record and its outbox events, all inside the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import replace

from google.protobuf.message import Message

from driftloop.events.v1 import events_pb2
from driftloop.services.registry.domain import Candidate, Model, ModelVersion
from driftloop.services.registry.policy import Decision, decide
from driftloop.services.registry.store import RegistryTx
from driftloop.shared import envelope, topics
from driftloop.shared.errors import InvalidInput

PRODUCER = "registry"


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
    return decide(
        model.spec.policy, c.metrics, c.champion_metrics if champion is not None else None
    )


def status_for(promote: bool, waits: bool) -> str:
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
            "policy": {
                "metric": policy.metric,
                "margin": policy.margin,
                "floor": policy.floor,
                "mode": policy.mode,
            },
        },
        c.correlation_id,
    )
    outbox(
        tx,
        c.model,
        events_pb2.ModelRegistered(model=c.model, version=number, run_id=c.run_id),
        **ids,
    )
    if waits:
        reason = version.decision_reason
        tx.add_audit(c.model, number, "await_approval", reason, {}, c.correlation_id)
    elif decision.promote:
        move_production(tx, version, champion, decision.reason, "policy", "promote", ids)
    else:
        tx.add_audit(c.model, number, "reject", decision.reason, {}, c.correlation_id)
        outbox(
            tx,
            c.model,
            events_pb2.ModelRejected(model=c.model, version=number, reason=decision.reason),
            **ids,
        )


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
        target.model,
        events_pb2.ModelPromoted(
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
    model: str,
    payload: Message,
    *,
    correlation_id: str = "",
    causation_id: str = "",
) -> None:
    event = envelope.new_event(
        PRODUCER, payload, correlation_id=correlation_id, causation_id=causation_id
    )
    tx.add_outbox(event.event_id, topics.MODELS, model, envelope.encode(event))
