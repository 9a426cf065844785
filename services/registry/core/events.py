"""The registry's domain events: what a decision announces (registered, pending, shadowed,
promoted, rejected), with the ids that place it in a causal chain; adapters/pb.py encodes them."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelRegistered:
    model: str
    version: str
    run_id: str


@dataclass(frozen=True)
class ModelPendingApproval:
    """A candidate that passed the policy in approval mode, waiting for Approve (or Reject)."""

    model: str
    version: str
    run_id: str
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    champion_version: str = ""
    """Production version the candidate was compared with ("" when none)."""
    champion_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelShadowed:
    """A candidate that passed the offline checks in shadow mode, now run beside production."""

    model: str
    version: str
    previous_shadow_version: str
    """The shadow version this one replaces ("" when none)."""
    artifact_uri: str
    artifact_sha256: str
    reason: str
    champion_version: str
    run_id: str


@dataclass(frozen=True)
class ModelPromoted:
    """The production alias moved (action "promote", "approve" or "rollback")."""

    model: str
    version: str
    previous_version: str
    artifact_uri: str
    artifact_sha256: str
    reason: str
    action: str


@dataclass(frozen=True)
class ModelRejected:
    model: str
    version: str
    reason: str


@dataclass(frozen=True)
class ModelNeedsAttention:
    model: str
    version: str
    reason: str
    decision: str
    """What the registry did: "promoted" or "rejected"."""


ModelEvent = (
    ModelRegistered
    | ModelPendingApproval
    | ModelShadowed
    | ModelPromoted
    | ModelRejected
    | ModelNeedsAttention
)

EVENT_TYPES: dict[str, type[ModelEvent]] = {
    cls.__name__: cls
    for cls in (
        ModelRegistered,
        ModelPendingApproval,
        ModelShadowed,
        ModelPromoted,
        ModelRejected,
        ModelNeedsAttention,
    )
}
"""Event type name -> class; the names are those of the protobuf messages in events.proto."""


@dataclass(frozen=True)
class RegistryEvent:
    """One event as it sits in the outbox: the payload and the ids its envelope will carry."""

    payload: ModelEvent
    event_id: str
    correlation_id: str
    causation_id: str
    occurred_at_ns: int
    """Unix time in nanoseconds: when the event was written (the envelope's occurred_at)."""

    @property
    def type(self) -> str:
        return type(self.payload).__name__


def new_event(
    payload: ModelEvent, *, correlation_id: str = "", causation_id: str = ""
) -> RegistryEvent:
    """A fresh event; without a correlation id it starts its own chain (its id is the chain's),
    the rule every driftloop envelope follows (shared/bus/envelope.py's new_event)."""
    event_id = str(uuid.uuid4())
    return RegistryEvent(
        payload=payload,
        event_id=event_id,
        correlation_id=correlation_id or event_id,
        causation_id=causation_id,
        occurred_at_ns=time.time_ns(),
    )
