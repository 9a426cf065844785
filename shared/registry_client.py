"""The one registry client: the registry's gRPC API as typed async calls on the records of
registry_types.py, failures mapped by shared/grpc/client.py (only Unavailable means "retry").

Services see it through their own narrow ports (training's RegistryPort, serving's
ProductionSource, monitoring's ReferenceSource and EvidenceSink); the CLI through `run_sync`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from driftloop.protos.registry.v1 import registry_pb2 as pb
from driftloop.protos.registry.v1 import registry_pb2_grpc
from driftloop.shared import registry_pb as convert
from driftloop.shared.auth import OPERATE, SERVICE, Role
from driftloop.shared.errors import NotFound, Unavailable
from driftloop.shared.grpc.client import aio_channel, auth_metadata, rpc_errors
from driftloop.shared.registry_types import (
    Candidate,
    History,
    Model,
    ModelListing,
    ModelVersion,
    Registration,
    ShadowEvidence,
    ShadowVerdict,
    SpecVersion,
    TrainingSpec,
)
from driftloop.shared.settings import CommonSettings

T = TypeVar("T")
_BROKEN = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)


class RegistryClient:
    """Async calls to the registry at `common.address("registry")`, each with `timeout` seconds.

    One channel, opened on the first call (an aio channel belongs to the running event loop).
    Mutating calls carry the bearer token. Close it with `close()` or `async with`.
    """

    def __init__(self, common: CommonSettings, *, timeout: float = 10.0) -> None:
        self._common = common
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_pb2_grpc.RegistryServiceStub | None = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    # models and their training specs
    async def create_model(
        self,
        name: str,
        dataset: str = "",
        target: str = "",
        *,
        spec: TrainingSpec | None = None,
        spec_yaml: str = "",
        author: str = "",
    ) -> Model:
        """Declare a model; `spec_yaml` (when set) is used instead of `spec`."""
        request = convert.create_to_pb(name, dataset, target, spec, spec_yaml, author)
        return convert.model_from_pb(await self._call("CreateModel", request, role=OPERATE))

    async def get_model(self, name: str) -> Model:
        found = await self._call("GetModel", pb.GetModelRequest(name=name))
        return convert.model_from_pb(found)

    async def list_models(self, fleet: str = "", *, brief: bool = False) -> list[Model]:
        """Every model, or only the partition models of `fleet`. `brief`: partition models
        without their fleet's spec, dataset and target (empty in the records)."""
        return list((await self.model_listing(fleet=fleet, brief=brief)).models)

    async def model_listing(
        self, *, fleet: str = "", brief: bool = False, changed_after: int = 0
    ) -> ModelListing:
        """`list_models`, only the models changed after revision `changed_after` (0: all), and
        the registry's revision as of the listing. A registry older than revisions answers
        with every model and revision 0."""
        request = pb.ListModelsRequest(fleet=fleet, brief=brief, changed_after=changed_after)
        reply = await self._call("ListModels", request)
        return ModelListing(tuple(convert.model_from_pb(m) for m in reply.models), reply.revision)

    async def get_spec(self, model: str, number: int = 0) -> SpecVersion:
        """Spec version `number` of `model` (0: the current one)."""
        found = await self._call("GetSpec", pb.GetSpecRequest(model=model, number=number))
        return convert.spec_version_from_pb(found)

    async def list_specs(self, model: str) -> list[SpecVersion]:
        reply = await self._call("ListSpecs", pb.ListSpecsRequest(model=model))
        return [convert.spec_version_from_pb(s) for s in reply.specs]

    async def set_spec(
        self,
        model: str,
        *,
        spec: TrainingSpec | None = None,
        spec_yaml: str = "",
        author: str = "",
        comment: str = "",
    ) -> SpecVersion:
        """A new spec version (the current one again when the spec hashes the same)."""
        request = pb.SetSpecRequest(
            model=model, spec_yaml=spec_yaml, author=author, comment=comment
        )
        if spec is not None:
            request.spec.CopyFrom(convert.spec_to_pb(spec))
        found = await self._call("SetSpec", request, role=OPERATE)
        return convert.spec_version_from_pb(found)

    # versions
    async def register_version(self, candidate: Candidate) -> Registration:
        """Register a candidate (idempotent by run id); the policy decides at once."""
        request = convert.candidate_to_pb(candidate)
        reply = await self._call("RegisterVersion", request, role=SERVICE)
        return convert.registration_from_pb(reply)

    async def get_version(self, model: str, version: str) -> ModelVersion:
        found = await self._call("GetVersion", pb.GetVersionRequest(model=model, version=version))
        return convert.version_from_pb(found)

    async def list_versions(self, model: str) -> list[ModelVersion]:
        reply = await self._call("ListVersions", pb.ListVersionsRequest(model=model))
        return [convert.version_from_pb(v) for v in reply.versions]

    async def search_versions(
        self, *, model: str = "", status: str = "", correlation_id: str = ""
    ) -> list[ModelVersion]:
        """Versions matching every given filter (an empty one matches all)."""
        request = pb.SearchVersionsRequest(
            model=model, status=status, correlation_id=correlation_id
        )
        reply = await self._call("SearchVersions", request)
        return [convert.version_from_pb(v) for v in reply.versions]

    async def production(self, model: str) -> ModelVersion | None:
        """The production version; None when there is none (or no such model: the registry
        answers both with NOT_FOUND)."""
        try:
            found = await self._call("GetProduction", pb.GetProductionRequest(model=model))
        except NotFound:
            return None
        return convert.version_from_pb(found)

    async def get_history(self, model: str, version: str = "") -> History:
        """Audit trail and alias moves of a model (or of one version)."""
        found = await self._call("GetHistory", pb.GetHistoryRequest(model=model, version=version))
        return convert.history_from_pb(found)

    # decisions (each needs a reason, recorded in the audit trail)
    async def promote(self, model: str, version: str, reason: str, actor: str = "") -> ModelVersion:
        return await self._decide("Promote", model, version, reason, actor)

    async def approve(self, model: str, version: str, reason: str, actor: str = "") -> ModelVersion:
        return await self._decide("Approve", model, version, reason, actor)

    async def reject(self, model: str, version: str, reason: str, actor: str = "") -> ModelVersion:
        return await self._decide("Reject", model, version, reason, actor)

    async def rollback(
        self, model: str, reason: str, version: str = "", actor: str = ""
    ) -> ModelVersion:
        """Production back to `version` (empty: the previous production version)."""
        return await self._decide("Rollback", model, version, reason, actor)

    async def report_shadow_evidence(self, evidence: ShadowEvidence) -> ShadowVerdict:
        reply = await self._call(
            "ReportShadowEvidence", convert.evidence_to_pb(evidence), role=SERVICE
        )
        return convert.verdict_from_pb(reply)

    async def _decide(
        self, method: str, model: str, version: str, reason: str, actor: str
    ) -> ModelVersion:
        request = convert.decision_to_pb(model, version, reason, actor)
        return convert.version_from_pb(await self._call(method, request, role=OPERATE))

    async def _call(self, method: str, request: Any, *, role: Role | None = None) -> Any:
        """`role`: the token role a mutating RPC needs (None: a read, sent with no token)."""
        if self._channel is None or self._stub is None:
            self._channel = aio_channel(self._common, "registry")
            self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        channel: grpc.aio.Channel = self._channel
        rpc = getattr(self._stub, method)
        metadata = auth_metadata(self._common, role) if role is not None else ()
        try:
            with rpc_errors(f"registry {method}", self._common.address("registry")):
                return await rpc(request, timeout=self._timeout, metadata=metadata)
        except Unavailable:
            await self._forget(channel)
            raise

    async def _forget(self, channel: grpc.aio.Channel) -> None:
        """Drop a channel whose connection failed. why: it would wait out gRPC's reconnect
        backoff (up to 120 s) before trying again; a fresh one connects on the next call."""
        broken = channel.get_state() in _BROKEN
        if broken and self._channel is channel:
            self._channel = self._stub = None
        if broken:
            await channel.close()


def run_sync(
    common: CommonSettings,
    work: Callable[[RegistryClient], Awaitable[T]],
    *,
    timeout: float = 15.0,
) -> T:
    """For synchronous callers (the CLI): `work` with a fresh client on a private event loop,
    e.g. `run_sync(common, lambda r: r.list_models())`. Errors as the client raises them."""

    async def run() -> T:
        async with RegistryClient(common, timeout=timeout) as registry:
            return await work(registry)

    return asyncio.run(run())
