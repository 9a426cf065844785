"""Hostile ingestion callers (#21): an unauthenticated 61 MB Ingest is refused from its metadata,
before its bytes are parsed, so six of them cost the service almost nothing, and clients with
the token keep being served meanwhile."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from support import start_process, stop_process, wait_for

from driftloop.protos.ingestion.v1 import ingestion_pb2 as pb
from driftloop.protos.ingestion.v1 import ingestion_pb2_grpc as pb_grpc
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.chaos.infra import rss_mb
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration
TOKEN = "s3cret-ingest-token"
MB = 1024 * 1024
INGEST = "/driftloop.ingestion.v1.IngestionService/Ingest"


def huge_ingest(total_bytes: int) -> bytes:
    """A serialized IngestRequest of ~total_bytes made of small Struct rows (the probe's shape;
    built as bytes, since building the message itself would cost the test gigabytes)."""
    row = struct_pb2.Struct()
    row.update({"x0": 1.0, "x1": 2.0, "label": "a"})
    one = row.SerializeToString()
    field = b"\x12" + bytes([len(one)]) + one
    return pb.IngestRequest(dataset="flood").SerializeToString() + field * (
        total_bytes // len(field)
    )


def small_ingest(i: int) -> pb.IngestRequest:
    row = struct_pb2.Struct()
    row.update({"x0": float(i), "label": "a"})
    return pb.IngestRequest(dataset="people", rows=[row])


async def test_unauthenticated_huge_ingests_are_refused_unread(
    common: CommonSettings, tmp_path: Path
) -> None:
    await ensure_topics(common.bootstrap())
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_PORTS__INGESTION": str(common.ports.ingestion),
        "DRIFTLOOP_PORTS__METRICS_INGESTION": str(common.ports.metrics_ingestion),
        "DRIFTLOOP_AUTH_TOKEN": TOKEN,
        "DRIFTLOOP_LOG_JSON": "true",
    }
    proc = start_process(
        [sys.executable, "-m", "driftloop.services.ingestion"],
        env=env,
        log_path=str(tmp_path / "ingestion.log"),
    )
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{common.ports.ingestion}", options=[("grpc.max_send_message_length", -1)]
    )
    stub = pb_grpc.IngestionServiceStub(channel)
    raw_ingest = channel.unary_unary(
        INGEST, request_serializer=lambda b: b, response_deserializer=pb.IngestResponse.FromString
    )
    good = (("authorization", f"Bearer {TOKEN}"),)
    answered: list[int] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def ready() -> bool:
        try:
            await stub.Ingest(small_ingest(0), metadata=good, timeout=2)
            return True
        except grpc.aio.AioRpcError:
            return False

    async def background() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                await stub.Ingest(small_ingest(i), metadata=good, timeout=10)
                answered.append(i)
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")

    try:
        await wait_for(ready, 60, "ingestion accepting rows")
        before = rss_mb(proc.pid)
        load = asyncio.create_task(background())
        await wait_for(lambda: len(answered) > 10, 30, "background ingests answered")
        body = huge_ingest(61 * MB)
        for metadata in [(), (), (), (("authorization", "Bearer wrong"),), (), ()]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await raw_ingest(body, metadata=metadata, timeout=60)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "Bearer <token>" in (refused.value.details() or "")
        seen = len(answered)
        await wait_for(lambda: len(answered) > seen + 10, 30, "ingests answered afterwards")
        stop.set()
        await load
        assert not failures, failures[:5]
        await wait_for(
            lambda: rss_mb(proc.pid) - before < 200, 30, "ingestion RSS within 200 MB of start"
        )
    finally:
        stop.set()
        stop_process(proc)
        await channel.close()
    assert proc.returncode == 0, (tmp_path / "ingestion.log").read_text()[-2000:]
