"""The registry's gRPC API in-process against the real broker: idempotent registration,
promotion and rollback events on driftloop.models, auth and input errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from pydantic import SecretStr
from registry_harness import registry_server
from support import wait_for

from driftloop.protos.registry.v1 import registry_pb2 as pb
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.grpc.client import auth_metadata
from driftloop.shared.settings import CommonSettings, RoleTokens

pytestmark = pytest.mark.integration
SHA = "cd" * 32


@asynccontextmanager
async def model_events(common: CommonSettings) -> AsyncIterator[list[envelope.Envelope]]:
    seen: list[envelope.Envelope] = []

    async def collect(event: envelope.Envelope) -> None:
        seen.append(event)

    publisher = EventPublisher(common.bootstrap(), "test")
    await publisher.start()
    consumer = EventConsumer(
        bootstrap=common.bootstrap(),
        group=None,
        topic_names=[topics.MODELS],
        publisher=publisher,
        on_event=collect,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 30)
        yield seen
    finally:
        await consumer.stop()
        await task
        await publisher.stop()


def register_request(
    model: str,
    run_id: str,
    accuracy: float,
    correlation_id: str,
    champion: str = "",
    champion_accuracy: float | None = None,
) -> pb.RegisterVersionRequest:
    return pb.RegisterVersionRequest(
        model=model,
        run_id=run_id,
        artifact_uri=f"artifacts/{model}/{run_id}/model.skops",
        artifact_sha256=SHA,
        profile_uri=f"artifacts/{model}/{run_id}/profile.json",
        metrics={"accuracy": accuracy, "f1_macro": accuracy},
        champion_metrics={} if champion_accuracy is None else {"accuracy": champion_accuracy},
        champion_version=champion,
        lineage=pb.Lineage(run_id=run_id, correlation_id=correlation_id, trigger="drift"),
        correlation_id=correlation_id,
        causation_id="drift-event-1",
    )


async def test_register_promote_and_rollback_publish_events(common: CommonSettings) -> None:
    async with registry_server(common) as stub, model_events(common) as seen:
        created = await stub.CreateModel(
            pb.CreateModelRequest(name="iris", dataset="flowers", target="species")
        )
        assert created.spec.policy.floor == 0.6 and created.production_version == ""

        first = await stub.RegisterVersion(register_request("iris", "run-a", 0.9, "corr-1"))
        again = await stub.RegisterVersion(register_request("iris", "run-a", 0.9, "corr-1"))
        assert first.version.version == again.version.version == "1"
        assert first.promoted and again.promoted
        assert len((await stub.ListVersions(pb.ListVersionsRequest(model="iris"))).versions) == 1

        def promoted(action: str, version: str) -> list[envelope.Envelope]:
            return [
                e
                for e in seen
                if e.type == "ModelPromoted"
                and e.model_promoted.model == "iris"
                and e.model_promoted.action == action
                and e.model_promoted.version == version
            ]

        event = (await wait_for(lambda: promoted("promote", "1"), 20, "ModelPromoted v1"))[0]
        assert event.correlation_id == "corr-1" and event.causation_id == "drift-event-1"
        assert event.model_promoted.artifact_uri == "artifacts/iris/run-a/model.skops"
        assert event.model_promoted.artifact_sha256 == SHA

        second = await stub.RegisterVersion(
            register_request("iris", "run-b", 0.95, "corr-2", champion="1", champion_accuracy=0.9)
        )
        assert second.promoted and second.version.version == "2"
        assert "0.950 >= champion 0.900 + margin 0.000" in second.decision_reason
        model = await stub.GetModel(pb.GetModelRequest(name="iris"))
        assert (model.production_version, model.latest_version) == ("2", 2)

        back = await stub.Rollback(pb.DecisionRequest(model="iris", reason="v2 misbehaves"))
        assert back.version == "1" and back.status == "production"
        rollback = (await wait_for(lambda: promoted("rollback", "1"), 20, "rollback event"))[0]
        assert rollback.model_promoted.previous_version == "2"
        assert rollback.model_promoted.reason == "v2 misbehaves"
        production = await stub.GetProduction(pb.GetProductionRequest(model="iris"))
        assert production.version == "1"
        lineage = await stub.GetLineage(pb.GetVersionRequest(model="iris", version="2"))
        assert (lineage.run_id, lineage.correlation_id) == ("run-b", "corr-2")
        found = await stub.SearchVersions(pb.SearchVersionsRequest(correlation_id="corr-2"))
        assert [v.version for v in found.versions] == ["2"]


async def test_errors_map_to_grpc_status_codes(common: CommonSettings) -> None:
    async with registry_server(common) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as bad_name:
            await stub.CreateModel(pb.CreateModelRequest(name="../x", dataset="d", target="y"))
        assert bad_name.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "model name" in (bad_name.value.details() or "")
        await stub.CreateModel(pb.CreateModelRequest(name="m", dataset="d", target="y"))
        with pytest.raises(grpc.aio.AioRpcError) as none:
            await stub.GetProduction(pb.GetProductionRequest(model="m"))
        assert none.value.code() == grpc.StatusCode.NOT_FOUND
        assert none.value.details() == "model m has no production version"
        with pytest.raises(grpc.aio.AioRpcError) as no_reason:
            await stub.Promote(pb.DecisionRequest(model="m", version="1"))
        assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as missing_metric:
            request = register_request("m", "r", 0.9, "c")
            del request.metrics["accuracy"]
            await stub.RegisterVersion(request)
        assert missing_metric.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as essay:
            await stub.Rollback(pb.DecisionRequest(model="m", reason="x" * 5000))
        assert essay.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert essay.value.details() == "reason is 5000 characters; the limit is 4096"
        with pytest.raises(grpc.aio.AioRpcError) as big_spec:
            await stub.SetSpec(pb.SetSpecRequest(model="m", spec_yaml="#" * 70_000))
        assert big_spec.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "training spec is 70000 bytes" in (big_spec.value.details() or "")


async def test_mutations_need_the_token_when_one_is_configured(common: CommonSettings) -> None:
    secured = common.model_copy(update={"auth_token": SecretStr("s3cret")})
    async with registry_server(secured) as stub:
        request = pb.CreateModelRequest(name="m", dataset="d", target="y")
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.CreateModel(request)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await stub.CreateModel(request, metadata=auth_metadata(secured))
        listed = await stub.ListModels(pb.ListModelsRequest())  # reads need no token
        assert [m.name for m in listed.models] == ["m"]


async def test_each_token_grants_only_its_roles_rpcs(common: CommonSettings) -> None:
    """#21's probe: an ingest (or operator) token holder registers m2 version with m1's
    artifact and flattering metrics; refused, and the registry is unchanged."""
    tokens = RoleTokens(
        ingest=SecretStr("ingest-tok"),
        operate=SecretStr("operate-tok"),
        service=SecretStr("service-tok"),
    )
    secured = common.model_copy(update={"tokens": tokens})

    def bearer(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    async with registry_server(secured) as stub:
        create = pb.CreateModelRequest(name="m2", dataset="d", target="y")
        for token in ("ingest-tok", "service-tok"):
            with pytest.raises(grpc.aio.AioRpcError) as wrong_role:
                await stub.CreateModel(create, metadata=bearer(token))
            assert wrong_role.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "needs the 'operate' role" in (wrong_role.value.details() or "")
        await stub.CreateModel(create, metadata=bearer("operate-tok"))

        forged = register_request("m2", "r6", 0.999, "c")
        for metadata in ((), bearer("nope"), bearer("ingest-tok"), bearer("operate-tok")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RegisterVersion(forged, metadata=metadata)
            expected = (
                grpc.StatusCode.PERMISSION_DENIED
                if metadata in (bearer("ingest-tok"), bearer("operate-tok"))
                else grpc.StatusCode.UNAUTHENTICATED
            )
            assert refused.value.code() == expected
        listed = await stub.ListVersions(pb.ListVersionsRequest(model="m2"))
        assert list(listed.versions) == [], "a refused registration leaves no trace"

        # the run's own artifact, registered by training's service token, goes in
        done = await stub.RegisterVersion(forged, metadata=bearer("service-tok"))
        assert done.version.version == "1"
        # m1's artifact under m2 is refused even with the service token
        stolen = register_request("m2", "r7", 0.999, "c")
        stolen.artifact_uri = "artifacts/m1/r1/model.skops"
        with pytest.raises(grpc.aio.AioRpcError) as outside:
            await stub.RegisterVersion(stolen, metadata=bearer("service-tok"))
        assert outside.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as nul:
            await stub.RegisterVersion(
                register_request("m2", "r8\x00", 0.9, "c"), metadata=bearer("service-tok")
            )
        assert nul.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        listed = await stub.ListVersions(pb.ListVersionsRequest(model="m2"))
        assert [v.version for v in listed.versions] == ["1"]
