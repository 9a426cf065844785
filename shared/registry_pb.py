"""The registry client's one protobuf <-> record conversion: registry API messages to the
frozen dataclasses of registry_types.py and back (the client's callers never see protobuf)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from driftloop.protos.registry.v1 import registry_pb2 as pb
from driftloop.shared.paired import PairedComparison
from driftloop.shared.registry_types import (
    AliasChange,
    AuditRecord,
    Candidate,
    DataFile,
    History,
    Lineage,
    Model,
    ModelVersion,
    PromotionPolicy,
    Registration,
    SearchSpec,
    ShadowEvidence,
    ShadowVerdict,
    SliceMetrics,
    SpecVersion,
    TrainingSpec,
)
from driftloop.shared.timestamps import seconds_or_none


def spec_from_pb(s: pb.TrainingSpec) -> TrainingSpec:
    p = s.policy
    return TrainingSpec(
        features=tuple(s.features),
        estimator=s.estimator,
        params=dict(s.params),
        window_rows=s.window_rows,
        holdout_fraction=s.holdout_fraction,
        min_rows=s.min_rows,
        policy=PromotionPolicy(
            metric=p.metric,
            margin=p.margin,
            floor=p.floor,
            mode=p.mode,
            slice_tolerance=p.slice_tolerance,
            min_slice_rows=p.min_slice_rows,
            shadow_min_labels=p.shadow_min_labels,
            shadow_max_labels=p.shadow_max_labels,
            confidence=p.confidence,
            min_improvement=p.min_improvement,
            power=p.power,
            max_attempts=p.max_attempts,
        ),
        slice_columns=tuple(s.slice_columns),
        search=SearchSpec(
            param_grid=dict(s.search.param_grid),
            cv=s.search.cv,
            max_candidates=s.search.max_candidates,
            scoring=s.search.scoring,
        ),
        schedule_seconds=s.schedule_seconds,
        task=s.task,
        partition_by=tuple(s.partition_by),
    )


def spec_to_pb(s: TrainingSpec) -> pb.TrainingSpec:
    p = s.policy
    return pb.TrainingSpec(
        features=list(s.features),
        estimator=s.estimator,
        params=s.params,
        window_rows=s.window_rows,
        holdout_fraction=s.holdout_fraction,
        min_rows=s.min_rows,
        policy=pb.PromotionPolicy(
            metric=p.metric,
            margin=p.margin,
            floor=p.floor,
            mode=p.mode,
            slice_tolerance=p.slice_tolerance,
            min_slice_rows=p.min_slice_rows,
            shadow_min_labels=p.shadow_min_labels,
            shadow_max_labels=p.shadow_max_labels,
            confidence=p.confidence,
            min_improvement=p.min_improvement,
            power=p.power,
            max_attempts=p.max_attempts,
        ),
        slice_columns=list(s.slice_columns),
        search=pb.SearchSpec(
            param_grid=s.search.param_grid,
            cv=s.search.cv,
            max_candidates=s.search.max_candidates,
            scoring=s.search.scoring,
        ),
        schedule_seconds=s.schedule_seconds,
        task=s.task,
        partition_by=list(s.partition_by),
    )


def spec_version_from_pb(v: pb.SpecVersion) -> SpecVersion:
    return SpecVersion(
        model=v.model,
        number=v.number,
        spec=spec_from_pb(v.spec),
        sha256=v.sha256,
        author=v.author,
        created_at=seconds_or_none(v.created_at),
        comment=v.comment,
    )


def model_from_pb(m: pb.Model) -> Model:
    return Model(
        name=m.name,
        dataset=m.dataset,
        target=m.target,
        # a brief listing's partition model has no spec (it is its fleet's)
        spec=spec_from_pb(m.spec) if m.HasField("spec") else TrainingSpec(),
        production_version=m.production_version,
        created_at=seconds_or_none(m.created_at),
        latest_version=m.latest_version,
        spec_version=m.spec_version,
        shadow_version=m.shadow_version,
        fleet=m.fleet,
        partitions=m.partitions,
        revision=m.revision,
    )


def lineage_from_pb(lin: pb.Lineage) -> Lineage:
    return Lineage(
        model=lin.model,
        version=lin.version,
        run_id=lin.run_id,
        manifest_version=lin.manifest_version,
        manifest_key=lin.manifest_key,
        files=tuple(DataFile(f.key, f.sha256, f.rows) for f in lin.files),
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


def slices_from_pb(found: Iterable[pb.SliceMetrics]) -> tuple[SliceMetrics, ...]:
    return tuple(SliceMetrics(s.column, s.value, s.rows, dict(s.metrics)) for s in found)


def slices_to_pb(found: Iterable[SliceMetrics]) -> list[pb.SliceMetrics]:
    return [
        pb.SliceMetrics(column=s.column, value=s.value, rows=s.rows, metrics=s.metrics)
        for s in found
    ]


def version_from_pb(v: pb.ModelVersion) -> ModelVersion:
    return ModelVersion(
        model=v.model,
        version=v.version,
        status=v.status,
        artifact_uri=v.artifact_uri,
        artifact_sha256=v.artifact_sha256,
        profile_uri=v.profile_uri,
        metrics=dict(v.metrics),
        lineage=lineage_from_pb(v.lineage),
        decision_reason=v.decision_reason,
        created_at=seconds_or_none(v.created_at),
        run_id=v.run_id,
        slice_metrics=slices_from_pb(v.slice_metrics),
    )


def candidate_to_pb(c: Candidate) -> pb.RegisterVersionRequest:
    return pb.RegisterVersionRequest(
        model=c.model,
        run_id=c.run_id,
        artifact_uri=c.artifact_uri,
        artifact_sha256=c.artifact_sha256,
        profile_uri=c.profile_uri,
        metrics=c.metrics,
        champion_metrics=c.champion_metrics,
        champion_version=c.champion_version,
        lineage=lineage_to_pb(c.lineage),
        correlation_id=c.correlation_id,
        causation_id=c.causation_id,
        slice_metrics=slices_to_pb(c.slice_metrics),
        champion_slice_metrics=slices_to_pb(c.champion_slice_metrics),
        comparison=comparison_to_pb(c.comparison),
    )


def comparison_to_pb(c: PairedComparison | None) -> pb.PairedComparison | None:
    return None if c is None else pb.PairedComparison(**c.to_dict())


def comparison_from_pb(
    holder: pb.RegisterVersionRequest,
) -> PairedComparison | None:
    """The request's comparison, or None when it has none."""
    if not holder.HasField("comparison"):
        return None
    c = holder.comparison
    return PairedComparison(
        metric=c.metric,
        rows=c.rows,
        candidate=c.candidate,
        champion=c.champion,
        difference=c.difference,
        lower=c.lower,
        upper=c.upper,
        p_value=c.p_value,
        confidence=c.confidence,
        method=c.method,
        discordance=c.discordance,
        spread=c.spread,
    )


def registration_from_pb(r: pb.RegisterVersionResponse) -> Registration:
    return Registration(
        version_from_pb(r.version),
        r.promoted,
        r.decision_reason,
        outcome=r.outcome,
        rows_needed=r.rows_needed,
        attention=r.attention,
    )


def history_from_pb(h: pb.History) -> History:
    return History(
        aliases=tuple(
            AliasChange(
                alias=a.alias,
                version=a.version,
                previous_version=a.previous_version,
                reason=a.reason,
                actor=a.actor,
                at=seconds_or_none(a.at),
                action=a.action,
            )
            for a in h.aliases
        ),
        audit=tuple(
            AuditRecord(
                at=seconds_or_none(r.at),
                model=r.model,
                version=r.version,
                action=r.action,
                reason=r.reason,
                details_json=r.details_json,
                correlation_id=r.correlation_id,
            )
            for r in h.audit
        ),
    )


def evidence_to_pb(e: ShadowEvidence) -> pb.ShadowEvidenceRequest:
    return pb.ShadowEvidenceRequest(
        model=e.model,
        version=e.version,
        champion_version=e.champion_version,
        labelled=e.labelled,
        shadow_metrics=e.shadow_metrics,
        champion_metrics=e.champion_metrics,
        actor=e.actor,
        shadow_only_right=e.shadow_only_right,
        champion_only_right=e.champion_only_right,
    )


def verdict_from_pb(r: pb.ShadowEvidenceResponse) -> ShadowVerdict:
    return ShadowVerdict(r.outcome, r.reason, r.min_labels, version_from_pb(r.version))


def decision_to_pb(model: str, version: str, reason: str, actor: str) -> pb.DecisionRequest:
    return pb.DecisionRequest(model=model, version=version, reason=reason, actor=actor)


def create_to_pb(
    name: str, dataset: str, target: str, spec: TrainingSpec | None, spec_yaml: str, author: str
) -> pb.CreateModelRequest:
    fields: dict[str, Any] = {"name": name, "dataset": dataset, "target": target}
    if spec is not None:
        fields["spec"] = spec_to_pb(spec)
    return pb.CreateModelRequest(**fields, spec_yaml=spec_yaml, author=author)
