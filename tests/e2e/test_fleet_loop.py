"""A fleet end to end on the real stack: one spec with `partition_by: [route_id]`, a
transit-like stream (shared/cli/bench/fleet_stream.py) whose routes each have their own delay
function, the global model and one model per route trained by themselves, a fleet request routed
row by row (in order) under a serving memory budget that holds fewer models than the fleet has;
and `driftloop demo --fleet`, where roadworks on one route retrain and redeploy that route's model
only.

Embedded broker only: fleets are no property of a broker, and the loop on real Kafka is covered by
the other e2e tests."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pandas as pd
import pytest

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.protos.ingestion.v1 import ingestion_pb2_grpc
from driftloop.shared import fleet
from driftloop.shared.cli.bench.fleet_stream import PARTITION, TARGET
from driftloop.shared.cli.bench.loop_driver import ingest_frame
from driftloop.shared.cli.commands.demo_fleet import (
    ROUTES,
    STREAM,
    WARM_BLOCKS,
    answered_by,
    fleet_request,
    fleet_spec,
)
from driftloop.shared.grpc.client import aio_channel, auth_metadata
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.e2e


@pytest.fixture
def fleet_stack(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> CommonSettings:
    # a budget of about two of the partition models (ridge artifacts: ~2 KB each; the estimate
    # is the artifact's size), so routing a mixed request loads and evicts
    monkeypatch.setenv("DRIFTLOOP_SERVING_MODEL_MEMORY_MB", "0.004")
    monkeypatch.setenv("DRIFTLOOP_SERVING_COMPILED_FORM", "false")
    found: CommonSettings = request.getfixturevalue("running_stack")
    return found


def test_a_fleet_trains_its_routes_and_serves_rows_in_order(fleet_stack: CommonSettings) -> None:
    asyncio.run(_story(fleet_stack))


async def _story(common: CommonSettings) -> None:
    name = f"arrivals-{secrets.token_hex(2)}"
    route_model = {r: fleet.partition_name(name, {PARTITION: r}) for r in range(ROUTES)}
    meta = auth_metadata(common)
    channels = {s: aio_channel(common, s) for s in ("ingestion", "serving")}
    ingest = ingestion_pb2_grpc.IngestionServiceStub(channels["ingestion"])
    serving = v2_grpc.GRPCInferenceServiceStub(channels["serving"])
    try:
        async with RegistryClient(common) as registry:
            await registry.create_model(name, name, TARGET, spec=fleet_spec())
            for block in range(WARM_BLOCKS):
                await ingest_frame(ingest, name, STREAM.rows(block), meta)

            async def trained() -> bool:
                partitions = await registry.list_models(fleet=name)
                promoted = [m for m in partitions if m.production_version]
                glob = await registry.production(name)
                # every route has a version, at least three beat the global model
                if glob is None or len(partitions) < ROUTES or len(promoted) < 3:
                    return False
                ready = v2.ModelReadyRequest(name=name, version=glob.version)
                return bool((await serving.ModelReady(ready)).ready)  # the global model serves

            await _until(trained, 240, "the global model, a version of every route")
            partitions = await registry.list_models(fleet=name)
            assert {m.name for m in partitions} == set(route_model.values())
            assert all(m.fleet == name and m.spec.partition_by == (PARTITION,) for m in partitions)
            promoted = sorted(
                int(m.name.rsplit("=", 1)[1]) for m in partitions if m.production_version
            )
            await _check_routing(serving, name, route_model, promoted)
    finally:
        for channel in channels.values():
            await channel.close()


async def _check_routing(
    serving: v2_grpc.GRPCInferenceServiceStub,
    name: str,
    route_model: dict[int, str],
    promoted: list[int],
) -> None:
    """Rows of three routes and one unknown route in one request: each answered by its own
    route's model (the unknown one by the global model), in the request's order, the same as
    asking each partition model directly; more routes than the memory budget holds, so models
    are loaded and evicted on the way."""
    first = STREAM.rows(0).groupby(PARTITION).head(1).set_index(PARTITION, drop=False)
    rows = first.loc[promoted[:3]]
    unknown = rows.iloc[:1].assign(**{PARTITION: 99})
    mixed = pd.concat([rows.iloc[[2, 0]], unknown, rows.iloc[[1]]]).reset_index(drop=True)
    routes = [int(r) for r in mixed[PARTITION]]
    for attempt in range(3):  # later rounds find some models evicted by the one before
        reply = await serving.ModelInfer(fleet_request(name, f"mix-{attempt}", mixed))
        assert set(answered_by(reply)) == {route_model[r] for r in routes if r != 99} | {name}
        together = list(reply.outputs[0].contents.fp64_contents)
        for i, route in enumerate(routes):
            target = name if route == 99 else route_model[route]
            alone = await serving.ModelInfer(fleet_request(target, f"one-{i}", mixed.iloc[[i]]))
            assert alone.outputs[0].contents.fp64_contents[0] == pytest.approx(together[i])
    missing = fleet_request(name, "no-route", mixed.drop(columns=[PARTITION]))
    try:
        await serving.ModelInfer(missing)
    except Exception as exc:  # noqa: BLE001 - grpc.aio.AioRpcError, checked below
        assert "INVALID_ARGUMENT" in str(exc) and PARTITION in str(exc)
    else:
        raise AssertionError("a fleet request without its partition column was answered")


def test_the_fleet_demo_retrains_the_drifted_route_only(tmp_path: Path) -> None:
    """`driftloop demo --fleet`: roadworks on one route are detected by that route's monitor,
    and only that route's model is retrained and redeployed."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftloop.shared.cli",
            "demo",
            "--fleet",
            "--json",
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["loop_closed"] is True, summary
    assert summary["drift_detected"] and summary["other_partitions_retrained"] == []
    assert summary["new_version"] not in ("", "1")
    assert summary["mae_after"] < summary["mae_during"], summary


async def _until(probe: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.5)  # poll
