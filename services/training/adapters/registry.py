"""Training's RegistryPort over the one registry client (shared/registry_client.py): this module
only maps the library's registry records to training's domain types and back.

Errors pass through as the client raises them: Unavailable (the run is queued again), NotFound,
Unauthenticated (a wrong token fails the run; it is not retried).
"""

from __future__ import annotations

from driftloop.services.training.core.domain import (
    CandidateVersion,
    Champion,
    Evidence,
    ModelInfo,
    ModelSpec,
    RegisteredVersion,
    Registration,
    SearchSpec,
    SliceScore,
    SpecInfo,
)
from driftloop.shared import estimators
from driftloop.shared import registry_types as reg
from driftloop.shared.errors import NotFound
from driftloop.shared.registry_client import RegistryClient


class TrainingRegistry:
    """Implements training's RegistryPort (services/training/core/training.py); unit tests
    hand it tests/registry_fake.py's FakeRegistry instead of the client."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client

    async def get_model(self, name: str) -> ModelInfo:
        return model_info(await self._client.get_model(name))

    async def list_models(self) -> list[ModelInfo]:
        return [model_info(m) for m in await self._client.list_models()]

    async def production(self, model: str) -> Champion | None:
        found = await self._client.production(model)
        if found is None:
            return None
        return Champion(found.version, found.artifact_uri, found.artifact_sha256)

    async def find_run(self, model: str, run_id: str) -> Registration | None:
        try:
            versions = await self._client.list_versions(model)
        except NotFound:
            return None  # a partition model that no registration created yet
        for v in versions:
            if v.run_id == run_id:
                return Registration(
                    version=v.version,
                    promoted=v.status in ("production", "archived"),
                    decision_reason=v.decision_reason,
                    metrics=dict(v.metrics),
                )
        return None

    async def get_version(self, model: str, version: str) -> RegisteredVersion:
        v = await self._client.get_version(model, version)
        return RegisteredVersion(
            model=v.model,
            version=v.version,
            run_id=v.run_id,
            artifact_uri=v.artifact_uri,
            artifact_sha256=v.artifact_sha256,
            metrics=dict(v.metrics),
            manifest_version=v.lineage.manifest_version,
            params=dict(v.lineage.params),
            spec_version=v.lineage.spec_version,
        )

    async def get_spec(self, model: str, number: int = 0) -> SpecInfo:
        found = await self._client.get_spec(model, number)
        return SpecInfo(number=found.number, sha256=found.sha256, spec=model_spec(found.spec))

    async def register(self, candidate: CandidateVersion) -> Registration:
        done = await self._client.register_version(to_candidate(candidate))
        return Registration(
            version=done.version.version,
            promoted=done.promoted,
            decision_reason=done.decision_reason,
            metrics=dict(done.version.metrics),
            outcome=done.outcome,
            rows_needed=done.rows_needed,
            attention=done.attention,
        )


def model_spec(s: reg.TrainingSpec) -> ModelSpec:
    task = estimators.task_of(s.task)
    return ModelSpec(
        features=s.features,
        estimator=s.estimator or estimators.DEFAULT_ESTIMATOR[task],
        params=dict(s.params),
        window_rows=s.window_rows,
        holdout_fraction=s.holdout_fraction,
        min_rows=s.min_rows,
        slice_columns=s.slice_columns,
        search=SearchSpec(
            param_grid=dict(s.search.param_grid),
            cv=s.search.cv or 3,
            max_candidates=s.search.max_candidates,
            scoring=s.search.scoring or s.policy.metric or estimators.DEFAULT_METRICS[task],
        ),
        schedule_seconds=s.schedule_seconds,
        evidence=evidence(s.policy, task),
        task=task,
        partition_by=tuple(s.partition_by),
    )


def evidence(p: reg.PromotionPolicy, task: str = estimators.CLASSIFICATION) -> Evidence:
    """The policy fields a drift run needs (the registry fills defaults in; zero means unset):
    the metric defaults to the task's (estimators.DEFAULT_METRICS)."""
    d = Evidence()
    return Evidence(
        metric=p.metric or estimators.DEFAULT_METRICS[estimators.task_of(task)],
        margin=p.margin,
        confidence=p.confidence or d.confidence,
        min_improvement=p.min_improvement or max(d.min_improvement, p.margin + 0.02),
        power=p.power or d.power,
        max_attempts=p.max_attempts or d.max_attempts,
    )


def model_info(m: reg.Model) -> ModelInfo:
    return ModelInfo(
        name=m.name,
        dataset=m.dataset,
        target=m.target,
        spec=model_spec(m.spec),
        production_version=m.production_version,
        spec_version=m.spec_version,
        fleet=m.fleet,
    )


def _slices(found: tuple[SliceScore, ...]) -> tuple[reg.SliceMetrics, ...]:
    return tuple(reg.SliceMetrics(s.column, s.value, s.rows, dict(s.metrics)) for s in found)


def to_candidate(c: CandidateVersion) -> reg.Candidate:
    lin = c.lineage
    return reg.Candidate(
        model=c.model,
        run_id=c.run_id,
        artifact_uri=c.artifact_uri,
        artifact_sha256=c.artifact_sha256,
        profile_uri=c.profile_uri,
        metrics=dict(c.metrics),
        champion_metrics=dict(c.champion_metrics),
        champion_version=c.champion_version,
        correlation_id=c.correlation_id,
        causation_id=c.causation_id,
        slice_metrics=_slices(c.slice_metrics),
        champion_slice_metrics=_slices(c.champion_slice_metrics),
        comparison=c.comparison,
        lineage=reg.Lineage(
            model=c.model,
            run_id=lin.run_id,
            manifest_version=lin.manifest_version,
            manifest_key=lin.manifest_key,
            files=tuple(reg.DataFile(f.key, f.sha256, f.rows) for f in lin.files),
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
        ),
    )
