"""The gRPC servicer of the Open Inference Protocol (V2): convert protobuf, call the core, convert
back; errors are mapped by shared/grpc/server.py. (The registry client is adapters/registry.py.)
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from driftloop.services.serving.adapters import pb as converters
from driftloop.services.serving.adapters import wire_scan
from driftloop.services.serving.core import limits
from driftloop.services.serving.core.inference import InferenceService
from driftloop.shared.grpc.server import ServiceBinding

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
        self._is_ready = is_ready
        self._worker = worker

    async def ServerLive(  # noqa: N802 - generated name
        self, request: pb.ServerLiveRequest, context: Any
    ) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802 - generated name
        self, request: pb.ServerReadyRequest, context: Any
    ) -> Any:
        return pb.ServerReadyResponse(ready=self._is_ready())

    async def ModelReady(  # noqa: N802 - generated name
        self, request: pb.ModelReadyRequest, context: Any
    ) -> Any:
        return pb.ModelReadyResponse(ready=self._inference.ready(request.name, request.version))

    async def ServerMetadata(  # noqa: N802 - generated name
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> Any:
        if self._worker is not None:
            context.set_trailing_metadata(((WORKER_METADATA, str(self._worker)),))
        return pb.ServerMetadataResponse(
            name="driftloop", version=importlib.metadata.version("driftloop"), extensions=[]
        )

    async def ModelMetadata(  # noqa: N802 - generated name
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> Any:
        view = await self._inference.view(request.name, request.version)
        return converters.to_model_metadata(
            view.loaded, view.versions, name=view.name, extra_inputs=view.extra_inputs
        )

    async def ModelInfer(  # noqa: N802 - generated name
        self, request: pb.ModelInferRequest, context: Any
    ) -> Any:
        self._inference.check_counts(
            request.model_name, request.model_version, len(request.inputs), len(request.outputs)
        )
        limits.check_parameter_count(request.model_name, len(request.parameters))
        # Inline, not in a thread: concurrent small requests are micro-batched into one predict.
        result = await self._inference.infer_async(converters.to_inference_request(request))
        return converters.to_infer_response(request, result)


def binding(servicer: InferenceServicer) -> ServiceBinding:
    """How build_server adds the servicer; V2 has no mutating RPCs."""
    return ServiceBinding(
        add=pb_grpc.add_GRPCInferenceServiceServicer_to_server,
        servicer=servicer,
        full_name=SERVICE_NAME,
        guards={"ModelInfer": wire_scan.check_request_shape},
    )
