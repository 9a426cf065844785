"""The registry's gRPC servicer: protobuf in, core call (off the event loop), protobuf out.

No try/except here: shared/grpc/server.py maps DriftloopError subclasses to status codes.
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias

import grpc

from driftloop.protos.registry.v1 import registry_pb2 as pb
from driftloop.protos.registry.v1 import registry_pb2_grpc
from driftloop.services.registry.adapters import pb as convert
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.shadow import ShadowEvidence
from driftloop.shared.auth import OPERATE, SERVICE, Role
from driftloop.shared.names import check_text

SERVICE_NAME = "driftloop.registry.v1.RegistryService"
ROLES: dict[str, Role] = {
    "CreateModel": OPERATE,
    "SetSpec": OPERATE,
    "Promote": OPERATE,
    "Approve": OPERATE,
    "Reject": OPERATE,
    "Rollback": OPERATE,
    # only training registers versions and only monitoring reports shadow evidence: an ingest
    # or operator token must not be able to make serving load an artifact of its choosing
    "RegisterVersion": SERVICE,
    "ReportShadowEvidence": SERVICE,
}
"""The token role each mutating RPC needs (shared/auth.py)."""

Ctx: TypeAlias = grpc.aio.ServicerContext


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self._r = registry

    async def CreateModel(  # noqa: N802 - generated name
        self, request: pb.CreateModelRequest, context: Ctx
    ) -> pb.Model:
        model = await asyncio.to_thread(
            self._r.create_model,
            request.name,
            request.dataset,
            request.target,
            convert.spec_from_pb(request.spec),
            request.spec_yaml,
            check_text("author", request.author),
        )
        return convert.model_to_pb(model)

    async def GetModel(  # noqa: N802 - generated name
        self, request: pb.GetModelRequest, context: Ctx
    ) -> pb.Model:
        return convert.model_to_pb(await asyncio.to_thread(self._r.get_model, request.name))

    async def ListModels(  # noqa: N802 - generated name
        self, request: pb.ListModelsRequest, context: Ctx
    ) -> pb.ListModelsResponse:
        found = await asyncio.to_thread(self._r.listing, request.fleet, request.changed_after)
        specs: dict[int, pb.TrainingSpec] = {}  # alive while `found` holds every spec
        return pb.ListModelsResponse(
            models=[convert.model_to_pb(m, brief=request.brief, specs=specs) for m in found.models],
            revision=found.revision,
        )

    async def RegisterVersion(  # noqa: N802 - generated name
        self, request: pb.RegisterVersionRequest, context: Ctx
    ) -> pb.RegisterVersionResponse:
        reg = await asyncio.to_thread(self._r.register, convert.candidate_from_pb(request))
        return pb.RegisterVersionResponse(
            version=convert.version_to_pb(reg.version),
            promoted=reg.promoted,
            decision_reason=reg.decision_reason,
            outcome=reg.outcome,
            rows_needed=reg.rows_needed,
            attention=reg.attention,
        )

    async def GetVersion(  # noqa: N802 - generated name
        self, request: pb.GetVersionRequest, context: Ctx
    ) -> pb.ModelVersion:
        version = await asyncio.to_thread(self._r.get_version, request.model, request.version)
        return convert.version_to_pb(version)

    async def ListVersions(  # noqa: N802 - generated name
        self, request: pb.ListVersionsRequest, context: Ctx
    ) -> pb.ListVersionsResponse:
        versions = await asyncio.to_thread(self._r.list_versions, request.model)
        return pb.ListVersionsResponse(versions=[convert.version_to_pb(v) for v in versions])

    async def SearchVersions(  # noqa: N802 - generated name
        self, request: pb.SearchVersionsRequest, context: Ctx
    ) -> pb.ListVersionsResponse:
        versions = await asyncio.to_thread(
            self._r.search_versions, request.model, request.status, request.correlation_id
        )
        return pb.ListVersionsResponse(versions=[convert.version_to_pb(v) for v in versions])

    async def GetProduction(  # noqa: N802 - generated name
        self, request: pb.GetProductionRequest, context: Ctx
    ) -> pb.ModelVersion:
        return convert.version_to_pb(await asyncio.to_thread(self._r.production, request.model))

    async def Promote(  # noqa: N802 - generated name
        self, request: pb.DecisionRequest, context: Ctx
    ) -> pb.ModelVersion:
        version = await asyncio.to_thread(
            self._r.promote, request.model, request.version, *_why(request)
        )
        return convert.version_to_pb(version)

    async def Reject(  # noqa: N802 - generated name
        self, request: pb.DecisionRequest, context: Ctx
    ) -> pb.ModelVersion:
        version = await asyncio.to_thread(
            self._r.reject, request.model, request.version, *_why(request)
        )
        return convert.version_to_pb(version)

    async def Rollback(  # noqa: N802 - generated name
        self, request: pb.DecisionRequest, context: Ctx
    ) -> pb.ModelVersion:
        version = await asyncio.to_thread(
            self._r.rollback, request.model, request.version, *_why(request)
        )
        return convert.version_to_pb(version)

    async def GetLineage(  # noqa: N802 - generated name
        self, request: pb.GetVersionRequest, context: Ctx
    ) -> pb.Lineage:
        lineage = await asyncio.to_thread(self._r.lineage, request.model, request.version)
        return convert.lineage_to_pb(lineage)

    async def Approve(  # noqa: N802 - generated name
        self, request: pb.DecisionRequest, context: Ctx
    ) -> pb.ModelVersion:
        version = await asyncio.to_thread(
            self._r.approve, request.model, request.version, *_why(request)
        )
        return convert.version_to_pb(version)

    async def GetHistory(  # noqa: N802 - generated name
        self, request: pb.GetHistoryRequest, context: Ctx
    ) -> pb.History:
        history = await asyncio.to_thread(self._r.history, request.model, request.version)
        return convert.history_to_pb(history)

    async def SetSpec(  # noqa: N802 - generated name
        self, request: pb.SetSpecRequest, context: Ctx
    ) -> pb.SpecVersion:
        version = await asyncio.to_thread(
            self._r.set_spec,
            request.model,
            convert.spec_from_pb(request.spec),
            request.spec_yaml,
            check_text("author", request.author),
            check_text("comment", request.comment),
        )
        return convert.spec_version_to_pb(version)

    async def GetSpec(  # noqa: N802 - generated name
        self, request: pb.GetSpecRequest, context: Ctx
    ) -> pb.SpecVersion:
        version = await asyncio.to_thread(self._r.get_spec, request.model, request.number)
        return convert.spec_version_to_pb(version)

    async def ListSpecs(  # noqa: N802 - generated name
        self, request: pb.ListSpecsRequest, context: Ctx
    ) -> pb.ListSpecsResponse:
        found = await asyncio.to_thread(self._r.list_specs, request.model)
        return pb.ListSpecsResponse(specs=[convert.spec_version_to_pb(v) for v in found])

    async def ReportShadowEvidence(  # noqa: N802 - generated name
        self, request: pb.ShadowEvidenceRequest, context: Ctx
    ) -> pb.ShadowEvidenceResponse:
        evidence = ShadowEvidence(
            model=request.model,
            version=request.version,
            champion_version=request.champion_version,
            labelled=request.labelled,
            shadow_metrics=dict(request.shadow_metrics),
            champion_metrics=dict(request.champion_metrics),
            actor=request.actor or "monitoring",
            shadow_only_right=request.shadow_only_right,
            champion_only_right=request.champion_only_right,
        )
        found = await asyncio.to_thread(self._r.report_shadow_evidence, evidence)
        return pb.ShadowEvidenceResponse(
            outcome=found.outcome,
            reason=found.reason,
            min_labels=found.min_labels,
            version=convert.version_to_pb(found.version),
        )


def _why(request: pb.DecisionRequest) -> tuple[str, str]:
    """A decision's reason and actor, each within the free-text limit."""
    return check_text("reason", request.reason), check_text("actor", request.actor)
