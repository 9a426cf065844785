"""The training gRPC servicer: start runs and inspect them.

No try/except here: shared/grpc/server.py maps DriftloopError subclasses to status codes.
"""

from __future__ import annotations

from typing import TypeAlias

import grpc

from driftloop.protos.training.v1 import training_pb2 as pb
from driftloop.protos.training.v1 import training_pb2_grpc
from driftloop.services.training.adapters.pb import reproduction_to_pb, run_to_pb
from driftloop.services.training.core.reproduce import Reproducer
from driftloop.services.training.core.training import Training
from driftloop.shared.auth import OPERATE, Role
from driftloop.shared.names import check_text

SERVICE_NAME = "driftloop.training.v1.TrainingService"
ROLES: dict[str, Role] = {"StartRun": OPERATE}
"""The token role each mutating RPC needs (shared/auth.py)."""

Ctx: TypeAlias = grpc.aio.ServicerContext


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, training: Training, reproducer: Reproducer) -> None:
        self._t = training
        self._reproducer = reproducer

    async def StartRun(self, request: pb.StartRunRequest, context: Ctx) -> pb.Run:  # noqa: N802
        reason = check_text("reason", request.reason)
        return run_to_pb(await self._t.start_manual(request.model, reason))

    async def GetRun(self, request: pb.GetRunRequest, context: Ctx) -> pb.Run:  # noqa: N802
        return run_to_pb(await self._t.get_run(request.run_id))

    async def ListRuns(  # noqa: N802 - generated name
        self, request: pb.ListRunsRequest, context: Ctx
    ) -> pb.ListRunsResponse:
        runs = await self._t.list_runs(request.model, request.limit, request.correlation_id)
        return pb.ListRunsResponse(runs=[run_to_pb(r) for r in runs])

    async def Reproduce(  # noqa: N802 - generated name
        self, request: pb.ReproduceRequest, context: Ctx
    ) -> pb.ReproduceReport:
        found = await self._reproducer.run(request.model, request.version)
        return reproduction_to_pb(request.model, request.version, found)
