"""The MonitoringService gRPC servicer: drift reports and drift history, read-only.

Converts requests to calls on ModelMonitors and domain results back to protobuf; no logic here.
"""

from __future__ import annotations

import grpc

from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.services.monitoring.adapters.pb import (
    drift_detected_pb,
    drift_report_pb,
    history_entry_pb,
)
from driftloop.services.monitoring.core.history import DriftHistory, HistoryEntry
from driftloop.services.monitoring.core.monitors import ModelMonitors
from driftloop.shared.errors import InvalidInput

FULL_NAME = "driftloop.monitoring.v1.MonitoringService"


class MonitoringServicer(monitoring_pb2_grpc.MonitoringServiceServicer):
    def __init__(self, monitors: ModelMonitors, history: DriftHistory | None = None) -> None:
        self._monitors = monitors
        self._history = history

    async def GetDriftReport(  # noqa: N802 - generated name
        self, request: monitoring_pb2.GetDriftReportRequest, context: grpc.aio.ServicerContext
    ) -> monitoring_pb2.DriftReport:
        if not request.model:
            raise InvalidInput("GetDriftReport needs a model name")
        return drift_report_pb(self._monitors.report(request.model))

    async def ListDriftEvents(  # noqa: N802 - generated name
        self, request: monitoring_pb2.ListDriftEventsRequest, context: grpc.aio.ServicerContext
    ) -> monitoring_pb2.ListDriftEventsResponse:
        # The persisted history when there is one (it survives restarts), else this process's.
        if self._history is not None:
            entries = self._history.entries(request.model)
        else:
            entries = [HistoryEntry(d) for d in self._monitors.decisions(request.model)]
        return monitoring_pb2.ListDriftEventsResponse(
            events=[drift_detected_pb(e.decision) for e in entries],
            entries=[history_entry_pb(e) for e in entries],
        )
