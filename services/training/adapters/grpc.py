"""The training gRPC servicer: start runs and inspect them.

No try/except here: shared/grpc/server.py maps DriftloopError subclasses to status codes.
"""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from driftloop.protos.training.v1 import training_pb2 as pb
from driftloop.protos.training.v1 import training_pb2_grpc
from driftloop.services.training.core.domain import Run
from driftloop.services.training.core.reproduce import Reproducer
from driftloop.services.training.core.training import Training
from driftloop.shared.names import check_text

SERVICE_NAME = "driftloop.training.v1.TrainingService"
MUTATING = frozenset({"StartRun"})

Ctx: TypeAlias = grpc.aio.ServicerContext


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, training: Training, reproducer: Reproducer) -> None:
        self._t = training
        self._reproducer = reproducer

    async def StartRun(self, request: pb.StartRunRequest, context: Ctx) -> pb.Run:
        reason = check_text("reason", request.reason)
        return run_to_pb(await self._t.start_manual(request.model, reason))

    async def GetRun(self, request: pb.GetRunRequest, context: Ctx) -> pb.Run:
        return run_to_pb(await self._t.get_run(request.run_id))

    async def ListRuns(self, request: pb.ListRunsRequest, context: Ctx) -> pb.ListRunsResponse:
        runs = await self._t.list_runs(request.model, request.limit, request.correlation_id)
        return pb.ListRunsResponse(runs=[run_to_pb(r) for r in runs])

    async def Reproduce(self, request: pb.ReproduceRequest, context: Ctx) -> pb.ReproduceReport:
        found = await self._reproducer.run(request.model, request.version)
        return pb.ReproduceReport(
            model=request.model,
            version=request.version,
            matched=found.matched,
            recorded_metrics=found.recorded_metrics,
            reproduced_metrics=found.reproduced_metrics,
            holdout_rows=found.holdout_rows,
            prediction_mismatches=found.prediction_mismatches,
            differences=found.differences,
            manifest_version=found.manifest_version,
            library_versions=found.library_versions,
            spec_version=found.spec_version,
        )


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def run_to_pb(run: Run) -> pb.Run:
    return pb.Run(
        run_id=run.run_id,
        model=run.model,
        state=run.state,
        trigger=run.trigger,
        episode_id=run.episode_id or "",
        correlation_id=run.correlation_id,
        error=run.error,
        created_at=_timestamp(run.created_at),
        started_at=_timestamp(run.started_at),
        finished_at=_timestamp(run.finished_at),
        registered_version=run.registered_version,
        metrics=run.metrics,
        manifest_version=run.manifest_version,
        training_rows=run.training_rows,
        fit_seconds=run.fit_seconds,
        promoted=run.promoted,
        decision_reason=run.decision_reason,
        data_wait_seconds=run.data_wait_seconds,
        caused_at=_timestamp(run.caused_at),
        cause_detail=run.cause_detail,
        reason=run.reason,
        progress=run.progress,
        spec_version=run.spec_version,
        best_params=run.best_params,
        schedule_slot=run.schedule_slot or "",
    )
