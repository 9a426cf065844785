"""The shared interceptor's status mapping, seen by a real client over a real port."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.shared import errors
from driftloop.shared.cli.stack.broker import free_port
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration


class _Partial(monitoring_pb2_grpc.MonitoringServiceServicer):
    """Implements one rpc (refusing its input) and leaves the other to the generated base."""

    async def GetDriftReport(self, request, context):  # noqa: N802 (generated name)
        raise errors.InvalidInput(f"model {request.model!r} is not a valid name")


async def _call(method: str, request: object, tmp_path: Path) -> grpc.aio.AioRpcError:
    common = CommonSettings(data_dir=tmp_path)
    binding = ServiceBinding(
        add=monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server,
        servicer=_Partial(),
        full_name="driftloop.monitoring.v1.MonitoringService",
    )
    server, _, port = build_server(common, free_port(), [binding])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await getattr(stub, method)(request, timeout=10)
            return caught.value
    finally:
        await server.stop(None)


async def test_rpc_left_to_the_generated_base_answers_unimplemented(tmp_path: Path) -> None:
    error = await _call("ListDriftEvents", monitoring_pb2.ListDriftEventsRequest(), tmp_path)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "ListDriftEvents" in (error.details() or "")


async def test_domain_error_maps_to_its_status_with_the_message(tmp_path: Path) -> None:
    request = monitoring_pb2.GetDriftReportRequest(model="../x")
    error = await _call("GetDriftReport", request, tmp_path)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'../x' is not a valid name" in (error.details() or "")
