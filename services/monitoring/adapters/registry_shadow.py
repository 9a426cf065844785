"""ReportShadowEvidence over gRPC: how monitoring hands a shadow's live evidence to the registry
(a mutating call: it carries the bearer token when one is configured)."""

from __future__ import annotations

import grpc

from driftloop.protos.registry.v1 import registry_pb2, registry_pb2_grpc
from driftloop.services.monitoring.core.shadow import Evidence, Verdict
from driftloop.shared.errors import Unavailable
from driftloop.shared.grpc.client import aio_channel, auth_metadata
from driftloop.shared.settings import CommonSettings


class RegistryEvidence:
    """The real EvidenceSink: a channel per report (reports are rare, every N labels)."""

    def __init__(self, common: CommonSettings, *, timeout: float = 5.0) -> None:
        self._common = common
        self._timeout = timeout

    async def report(self, evidence: Evidence) -> Verdict:
        request = registry_pb2.ShadowEvidenceRequest(
            model=evidence.model,
            version=evidence.version,
            champion_version=evidence.champion_version,
            labelled=evidence.labelled,
            shadow_metrics=evidence.shadow_metrics,
            champion_metrics=evidence.champion_metrics,
            actor="monitoring",
        )
        async with aio_channel(self._common, "registry") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            try:
                reply = await stub.ReportShadowEvidence(
                    request, timeout=self._timeout, metadata=auth_metadata(self._common)
                )
            except grpc.aio.AioRpcError as exc:
                raise Unavailable(
                    f"registry ReportShadowEvidence failed: {exc.code().name} {exc.details()}"
                ) from exc
        return Verdict(reply.outcome, reply.reason, reply.version.status == "shadow")
