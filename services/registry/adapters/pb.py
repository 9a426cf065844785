"""Conversions between the registry's domain types and its protobuf messages (both ways):
the gRPC API's messages, and the envelopes of the events the outbox publishes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields

from google.protobuf.message import Message

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.registry.v1 import registry_pb2 as pb
from driftloop.services.registry.core import events
from driftloop.services.registry.core.domain import (
    Candidate,
    DataFile,
    History,
    Lineage,
    Model,
    ModelVersion,
    PromotionPolicy,
    SearchSpec,
    SliceMetric,
    SpecVersion,
    TrainingSpec,
)
from driftloop.shared.errors import InvalidInput
from driftloop.shared.registry_pb import comparison_from_pb
from driftloop.shared.timestamps import timestamp

PRODUCER = "registry"


def spec_from_pb(spec: pb.TrainingSpec) -> TrainingSpec:
    return TrainingSpec(
        features=tuple(spec.features),
        estimator=spec.estimator,
        params=dict(spec.params),
        window_rows=spec.window_rows,
        holdout_fraction=spec.holdout_fraction,
        min_rows=spec.min_rows,
        policy=PromotionPolicy(
            metric=spec.policy.metric,
            margin=spec.policy.margin,
            floor=spec.policy.floor,
            mode=spec.policy.mode,
            slice_tolerance=spec.policy.slice_tolerance,
            min_slice_rows=spec.policy.min_slice_rows,
            shadow_min_labels=spec.policy.shadow_min_labels,
            shadow_max_labels=spec.policy.shadow_max_labels,
            confidence=spec.policy.confidence,
            min_improvement=spec.policy.min_improvement,
            power=spec.policy.power,
            max_attempts=spec.policy.max_attempts,
        ),
        slice_columns=tuple(spec.slice_columns),
        search=SearchSpec(
            param_grid=dict(spec.search.param_grid),
            cv=spec.search.cv,
            max_candidates=spec.search.max_candidates,
            scoring=spec.search.scoring,
        ),
        schedule_seconds=spec.schedule_seconds,
        task=spec.task,
        partition_by=tuple(spec.partition_by),
    )


def spec_to_pb(spec: TrainingSpec) -> pb.TrainingSpec:
    return pb.TrainingSpec(
        features=list(spec.features),
        estimator=spec.estimator,
        params=spec.params,
        window_rows=spec.window_rows,
        holdout_fraction=spec.holdout_fraction,
        min_rows=spec.min_rows,
        policy=pb.PromotionPolicy(
            metric=spec.policy.metric,
            margin=spec.policy.margin,
            floor=spec.policy.floor,
            mode=spec.policy.mode,
            slice_tolerance=spec.policy.slice_tolerance,
            min_slice_rows=spec.policy.min_slice_rows,
            shadow_min_labels=spec.policy.shadow_min_labels,
            shadow_max_labels=spec.policy.shadow_max_labels,
            confidence=spec.policy.confidence,
            min_improvement=spec.policy.min_improvement,
            power=spec.policy.power,
            max_attempts=spec.policy.max_attempts,
        ),
        slice_columns=list(spec.slice_columns),
        search=pb.SearchSpec(
            param_grid=spec.search.param_grid,
            cv=spec.search.cv,
            max_candidates=spec.search.max_candidates,
            scoring=spec.search.scoring,
        ),
        schedule_seconds=spec.schedule_seconds,
        task=spec.task,
        partition_by=list(spec.partition_by),
    )


def spec_version_to_pb(v: SpecVersion) -> pb.SpecVersion:
    return pb.SpecVersion(
        model=v.model,
        number=v.number,
        spec=spec_to_pb(v.spec),
        sha256=v.sha256,
        author=v.author,
        created_at=timestamp(v.created_at),
        comment=v.comment,
    )


def slices_from_pb(slices: Iterable[pb.SliceMetrics]) -> tuple[SliceMetric, ...]:
    return tuple(
        SliceMetric(column=s.column, value=s.value, rows=s.rows, metrics=dict(s.metrics))
        for s in slices
    )


def slices_to_pb(slices: Iterable[SliceMetric]) -> list[pb.SliceMetrics]:
    return [
        pb.SliceMetrics(column=s.column, value=s.value, rows=s.rows, metrics=s.metrics)
        for s in slices
    ]


def model_to_pb(
    model: Model, *, brief: bool = False, specs: dict[int, pb.TrainingSpec] | None = None
) -> pb.Model:
    """`brief`: a partition model without what it shares with its fleet (spec, dataset, target,
    spec version), which was most of a fleet listing's bytes. `specs`: specs converted so far
    in one listing, by the spec object's id (a fleet's partitions share one spec object)."""
    found = pb.Model(
        name=model.name,
        production_version=model.production_version,
        created_at=timestamp(model.created_at),
        latest_version=model.latest_version,
        shadow_version=model.shadow_version,
        fleet=model.fleet,
        partitions=model.partitions,
        revision=model.revision,
    )
    if not (brief and model.fleet):
        found.dataset, found.target, found.spec_version = (
            model.dataset,
            model.target,
            model.spec_version,
        )
        converted = specs.get(id(model.spec)) if specs is not None else None
        if converted is None:
            converted = spec_to_pb(model.spec)
            if specs is not None:
                specs[id(model.spec)] = converted
        found.spec.CopyFrom(converted)
    return found


def lineage_from_pb(lin: pb.Lineage) -> Lineage:
    return Lineage(
        model=lin.model,
        version=lin.version,
        run_id=lin.run_id,
        manifest_version=lin.manifest_version,
        manifest_key=lin.manifest_key,
        files=tuple(DataFile(key=f.key, sha256=f.sha256, rows=f.rows) for f in lin.files),
        params=dict(lin.params),
        code_version=lin.code_version,
        causing_event_id=lin.causing_event_id,
        correlation_id=lin.correlation_id,
        episode_id=lin.episode_id,
        parent_version=lin.parent_version,
        trigger=lin.trigger,
        training_rows=lin.training_rows,
        spec_version=lin.spec_version,
        spec_sha256=lin.spec_sha256,
    )


def lineage_to_pb(lin: Lineage) -> pb.Lineage:
    return pb.Lineage(
        model=lin.model,
        version=lin.version,
        run_id=lin.run_id,
        manifest_version=lin.manifest_version,
        manifest_key=lin.manifest_key,
        files=[pb.DataFile(key=f.key, sha256=f.sha256, rows=f.rows) for f in lin.files],
        params=lin.params,
        code_version=lin.code_version,
        causing_event_id=lin.causing_event_id,
        correlation_id=lin.correlation_id,
        episode_id=lin.episode_id,
        parent_version=lin.parent_version,
        trigger=lin.trigger,
        training_rows=lin.training_rows,
        spec_version=lin.spec_version,
        spec_sha256=lin.spec_sha256,
    )


def version_to_pb(v: ModelVersion) -> pb.ModelVersion:
    return pb.ModelVersion(
        model=v.model,
        version=v.version,
        status=v.status,
        artifact_uri=v.artifact_uri,
        artifact_sha256=v.artifact_sha256,
        profile_uri=v.profile_uri,
        metrics=v.metrics,
        lineage=lineage_to_pb(v.lineage),
        decision_reason=v.decision_reason,
        created_at=timestamp(v.created_at),
        run_id=v.run_id,
        slice_metrics=slices_to_pb(v.slice_metrics),
    )


def candidate_from_pb(req: pb.RegisterVersionRequest) -> Candidate:
    return Candidate(
        model=req.model,
        run_id=req.run_id,
        artifact_uri=req.artifact_uri,
        artifact_sha256=req.artifact_sha256,
        profile_uri=req.profile_uri,
        metrics=dict(req.metrics),
        champion_metrics=dict(req.champion_metrics),
        champion_version=req.champion_version,
        lineage=lineage_from_pb(req.lineage),
        correlation_id=req.correlation_id,
        causation_id=req.causation_id,
        slice_metrics=slices_from_pb(req.slice_metrics),
        champion_slice_metrics=slices_from_pb(req.champion_slice_metrics),
        comparison=comparison_from_pb(req),
    )


def history_to_pb(history: History) -> pb.History:
    return pb.History(
        aliases=[
            pb.AliasChange(
                alias=a.alias,
                version=a.version,
                previous_version=a.previous_version,
                reason=a.reason,
                actor=a.actor,
                at=timestamp(a.at),
                action=a.action,
            )
            for a in history.aliases
        ],
        audit=[
            pb.AuditRecord(
                at=timestamp(r.at),
                model=r.model,
                version=r.version,
                action=r.action,
                reason=r.reason,
                details_json=json.dumps(r.details, sort_keys=True),
                correlation_id=r.correlation_id,
            )
            for r in history.audit
        ],
    )


# event type -> its field in the Envelope's `payload` oneof and its message; the domain events
# carry exactly the message's fields (tests/unit/registry/test_registry_event_pb.py checks it)
_EVENT_PB: dict[str, tuple[str, type[Message]]] = {
    "ModelRegistered": ("model_registered", events_pb2.ModelRegistered),
    "ModelPendingApproval": ("model_pending_approval", events_pb2.ModelPendingApproval),
    "ModelShadowed": ("model_shadowed", events_pb2.ModelShadowed),
    "ModelPromoted": ("model_promoted", events_pb2.ModelPromoted),
    "ModelRejected": ("model_rejected", events_pb2.ModelRejected),
    "ModelNeedsAttention": ("model_needs_attention", events_pb2.ModelNeedsAttention),
}


def event_to_pb(event: events.RegistryEvent) -> events_pb2.Envelope:
    """The envelope published for an outbox event: its stored ids and time, producer "registry"."""
    field, message = _EVENT_PB[event.type]
    env = events_pb2.Envelope(
        event_id=event.event_id,
        type=event.type,
        producer=PRODUCER,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        **{field: message(**asdict(event.payload))},
    )
    env.occurred_at.FromNanoseconds(event.occurred_at_ns)
    return env


def event_from_pb(env: events_pb2.Envelope) -> events.RegistryEvent:
    """The registry event an envelope carries; InvalidInput for any other payload."""
    cls = events.EVENT_TYPES.get(env.type)
    if cls is None or env.WhichOneof("payload") != _EVENT_PB[env.type][0]:
        raise InvalidInput(
            f"not a registry event: type {env.type!r}, payload {env.WhichOneof('payload')!r}"
        )
    message = getattr(env, _EVENT_PB[env.type][0])
    values = {f.name: getattr(message, f.name) for f in fields(cls)}
    return events.RegistryEvent(
        payload=cls(**{k: dict(v) if isinstance(v, Mapping) else v for k, v in values.items()}),
        event_id=env.event_id,
        correlation_id=env.correlation_id,
        causation_id=env.causation_id,
        occurred_at_ns=env.occurred_at.ToNanoseconds(),
    )
