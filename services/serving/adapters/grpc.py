"""The gRPC adapters: the Open Inference Protocol (V2) servicer (convert protobuf, call the
core, convert back; errors mapped by shared/grpc/server.py) and the registry client reconcile reads.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

import grpc

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from driftloop.protos.registry.v1 import registry_pb2, registry_pb2_grpc
from driftloop.services.serving.adapters import pb as converters
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.reconcile import ProductionVersion
from driftloop.shared.errors import Unavailable
from driftloop.shared.grpc.client import aio_channel
from driftloop.shared.grpc.server import ServiceBinding
from driftloop.shared.settings import CommonSettings

SERVICE_NAME = "inference.GRPCInferenceService"
WORKER_METADATA = "driftloop-worker"
"""Trailing metadata of ServerMetadata naming the worker that answered (workers > 1 only)."""


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        inference: InferenceService,
        is_ready: Callable[[], bool],
        *,
        worker: int | None = None,
    ) -> None:
        """`worker`: this process's index when serving runs several workers; ServerMetadata
        then names it in its trailing metadata (a connection stays with one worker)."""
        self._inference = inference
        self._slot = inference.slot
        self._is_ready = is_ready
        self._worker = worker

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._is_ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self._slot.has(request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> Any:
        if self._worker is not None:
            context.set_trailing_metadata(((WORKER_METADATA, str(self._worker)),))
        return pb.ServerMetadataResponse(
            name="driftloop", version=importlib.metadata.version("driftloop"), extensions=[]
        )

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> Any:
        loaded = self._slot.get(request.name, request.version)
        return converters.to_model_metadata(loaded, self._slot.versions(request.name))

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> Any:
        # Inline, not in a thread: concurrent small requests are micro-batched into one predict.
        result = await self._inference.infer_async(converters.to_inference_request(request))
        return converters.to_infer_response(request, result)


def binding(servicer: InferenceServicer) -> ServiceBinding:
    """How build_server adds the servicer; V2 has no mutating RPCs."""
    return ServiceBinding(
        add=pb_grpc.add_GRPCInferenceServiceServicer_to_server,
        servicer=servicer,
        full_name=SERVICE_NAME,
    )


class RegistryReader:
    """Reads production versions from the registry over gRPC (reconcile's ProductionSource).

    A channel per call: one call every few seconds, and a fresh channel does not inherit the
    reconnect backoff of one that failed while the registry was down.
    """

    def __init__(self, common: CommonSettings, timeout_s: float) -> None:
        self._common = common
        self._timeout = timeout_s
        self._shadows: dict[str, str] = {}

    async def production_versions(self) -> dict[str, str]:
        async with aio_channel(self._common, "registry") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            try:
                reply = await stub.ListModels(
                    registry_pb2.ListModelsRequest(), timeout=self._timeout
                )
            except grpc.aio.AioRpcError as exc:
                raise self._unavailable("ListModels", exc) from exc
        self._shadows = {m.name: m.shadow_version for m in reply.models if m.shadow_version}
        return {m.name: m.production_version for m in reply.models if m.production_version}

    async def shadow_versions(self) -> dict[str, str]:
        """The shadows seen by the latest production_versions() call (same ListModels reply)."""
        return dict(self._shadows)

    async def get(self, model: str, version: str) -> ProductionVersion:
        async with aio_channel(self._common, "registry") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            try:
                reply = await stub.GetVersion(
                    registry_pb2.GetVersionRequest(model=model, version=version),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as exc:
                raise self._unavailable(f"GetVersion({model}, {version})", exc) from exc
        return ProductionVersion(
            model=reply.model,
            version=reply.version,
            artifact_key=reply.artifact_uri,
            sha256=reply.artifact_sha256,
            correlation_id=reply.lineage.correlation_id,
        )

    def _unavailable(self, call: str, exc: grpc.aio.AioRpcError) -> Unavailable:
        return Unavailable(
            f"registry at {self._common.address('registry')}: {call} failed with "
            f"{exc.code().name}: {exc.details()}"
        )
