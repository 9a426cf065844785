"""The registry, as training sees it: the RegistryPort over gRPC.

gRPC errors are mapped once here to driftloop errors (NOT_FOUND -> NotFound, unreachable ->
Unavailable, ...), so the core never sees grpc.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TypeVar

import grpc

from driftloop.protos.registry.v1 import registry_pb2 as pb
from driftloop.protos.registry.v1 import registry_pb2_grpc
from driftloop.services.training.core.domain import (
    CandidateVersion,
    Champion,
    ModelInfo,
    ModelSpec,
    RegisteredVersion,
    Registration,
    SearchSpec,
    SliceScore,
    SpecInfo,
)
from driftloop.shared import errors

T = TypeVar("T")
_ERRORS: dict[grpc.StatusCode, type[errors.DriftloopError]] = {
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidInput,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.Conflict,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
}


async def _call(what: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        kind = _ERRORS.get(exc.code(), errors.DriftloopError)
        raise kind(f"registry {what}: {exc.details()}") from exc


class RegistryClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 30.0,
    ) -> None:
        self._stub = registry_pb2_grpc.RegistryServiceStub(channel)
        self._metadata = tuple(metadata)
        self._timeout = timeout

    async def get_model(self, name: str) -> ModelInfo:
        model = await _call(
            f"GetModel {name}",
            self._stub.GetModel(pb.GetModelRequest(name=name), timeout=self._timeout),
        )
        return model_from_pb(model)

    async def list_models(self) -> list[ModelInfo]:
        response = await _call(
            "ListModels", self._stub.ListModels(pb.ListModelsRequest(), timeout=self._timeout)
        )
        return [model_from_pb(m) for m in response.models]

    async def production(self, model: str) -> Champion | None:
        try:
            v = await _call(
                f"GetProduction {model}",
                self._stub.GetProduction(
                    pb.GetProductionRequest(model=model), timeout=self._timeout
                ),
            )
        except errors.NotFound:
            return None
        return Champion(
            version=v.version, artifact_uri=v.artifact_uri, artifact_sha256=v.artifact_sha256
        )

    async def find_run(self, model: str, run_id: str) -> Registration | None:
        response = await _call(
            f"ListVersions {model}",
            self._stub.ListVersions(pb.ListVersionsRequest(model=model), timeout=self._timeout),
        )
        for v in response.versions:
            if v.run_id == run_id:
                return Registration(
                    version=v.version,
                    promoted=v.status in ("production", "archived"),
                    decision_reason=v.decision_reason,
                    metrics=dict(v.metrics),
                )
        return None

    async def get_version(self, model: str, version: str) -> RegisteredVersion:
        v = await _call(
            f"GetVersion {model}:{version}",
            self._stub.GetVersion(
                pb.GetVersionRequest(model=model, version=version), timeout=self._timeout
            ),
        )
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
        found = await _call(
            f"GetSpec {model}:{number or 'current'}",
            self._stub.GetSpec(
                pb.GetSpecRequest(model=model, number=number), timeout=self._timeout
            ),
        )
        return SpecInfo(number=found.number, sha256=found.sha256, spec=spec_from_pb(found.spec))

    async def register(self, candidate: CandidateVersion) -> Registration:
        response = await _call(
            f"RegisterVersion {candidate.model}",
            self._stub.RegisterVersion(
                candidate_to_pb(candidate), metadata=self._metadata, timeout=self._timeout
            ),
        )
        return Registration(
            version=response.version.version,
            promoted=response.promoted,
            decision_reason=response.decision_reason,
            metrics=dict(response.version.metrics),
        )


def spec_from_pb(s: pb.TrainingSpec) -> ModelSpec:
    return ModelSpec(
        features=tuple(s.features),
        estimator=s.estimator,
        params=dict(s.params),
        window_rows=s.window_rows,
        holdout_fraction=s.holdout_fraction,
        min_rows=s.min_rows,
        slice_columns=tuple(s.slice_columns),
        search=SearchSpec(
            param_grid=dict(s.search.param_grid),
            cv=s.search.cv or 3,
            max_candidates=s.search.max_candidates,
            scoring=s.search.scoring or s.policy.metric or "accuracy",
        ),
        schedule_seconds=s.schedule_seconds,
    )


def model_from_pb(model: pb.Model) -> ModelInfo:
    return ModelInfo(
        name=model.name,
        dataset=model.dataset,
        target=model.target,
        spec=spec_from_pb(model.spec),
        production_version=model.production_version,
        spec_version=model.spec_version,
    )


def _slices(found: tuple[SliceScore, ...]) -> list[pb.SliceMetrics]:
    return [
        pb.SliceMetrics(column=s.column, value=s.value, rows=s.rows, metrics=s.metrics)
        for s in found
    ]


def candidate_to_pb(c: CandidateVersion) -> pb.RegisterVersionRequest:
    lin = c.lineage
    return pb.RegisterVersionRequest(
        model=c.model,
        run_id=c.run_id,
        artifact_uri=c.artifact_uri,
        artifact_sha256=c.artifact_sha256,
        profile_uri=c.profile_uri,
        metrics=c.metrics,
        champion_metrics=c.champion_metrics,
        champion_version=c.champion_version,
        correlation_id=c.correlation_id,
        causation_id=c.causation_id,
        slice_metrics=_slices(c.slice_metrics),
        champion_slice_metrics=_slices(c.champion_slice_metrics),
        lineage=pb.Lineage(
            model=c.model,
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
        ),
    )
