"""A fleet served by the serving process (`python -m driftloop.services.serving`) reconciling with
a real registry (gRPC, SQLite), partition models created by the registry on their first
registration: a fleet request whose rows belong to three partitions, one with no model, answered
in order by the right models and logged under them (and a file scored by `driftloop predict`
the same way); a memory budget holding 2 of 4 partition
models evicting and reloading them under concurrent requests, none failing; a missing partition
column refused with INVALID_ARGUMENT naming it."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from registry_harness import registry_server
from serving_models import FLEET, fleet_regressor
from support import read_events, stack_env, start_process, stop_process, wait_for

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from driftloop.shared import artifacts
from driftloop.shared.bus import topics
from driftloop.shared.cli.commands.predict import predict_file
from driftloop.shared.records import ipc_to_table
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.registry_types import Candidate, Lineage
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

SPEC = """
dataset: trips
target: delay_s
task: regression
estimator: ridge
partition_by: [route_id]
"""
ROUTES = (1, 2, 3, 4)
PARTITIONS = {r: fleet_regressor(100.0 * r) for r in ROUTES}
GLOBAL = fleet_regressor(1000.0)


def name(route: int) -> str:
    return f"{FLEET}/route_id={route}"


def run_id(model: str) -> str:
    return "run-" + model.replace("/", "-").replace("=", "-")


def key(model: str) -> str:
    """Where training stores a run's artifact (the registry checks the run's prefix)."""
    return f"artifacts/{model}/{run_id(model)}/model.skops"


async def register(client: RegistryClient, model: str, blob: bytes) -> None:
    """Store the artifact and register it as training would; the first version of a model with
    nothing to beat is promoted."""
    candidate = Candidate(
        model=model,
        run_id=run_id(model),
        artifact_uri=key(model),
        artifact_sha256=artifacts.sha256(blob),
        metrics={"mae": 10.0, "rmse": 12.0, "r2": 0.5},
        lineage=Lineage(run_id=run_id(model), trigger="manual"),
    )
    registered = await client.register_version(candidate)
    assert registered.promoted, registered


def request(rows: list[tuple[int, float, float]], rid: str, *, route: bool = True) -> Any:
    req = pb.ModelInferRequest(model_name=FLEET, id=rid)
    if route:
        column = req.inputs.add(name="route_id", datatype="INT64", shape=[len(rows)])
        column.contents.int64_contents.extend(r[0] for r in rows)
    for j, feature in ((1, "x1"), (2, "x2")):
        tensor = req.inputs.add(name=feature, datatype="FP64", shape=[len(rows)])
        tensor.contents.fp64_contents.extend(r[j] for r in rows)
    return req


def predicted(pipeline: Any, rows: list[tuple[int, float, float]]) -> np.ndarray:
    return pipeline.predict(pd.DataFrame([r[1:] for r in rows], columns=["x1", "x2"]))


def scrape(port: int) -> dict[str, float]:
    """The serving process's partition metrics, summed over label sets."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("driftloop_serving_partition"):
                found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


async def test_a_fleet_is_routed_evicted_and_reloaded_by_the_serving_process(
    common: CommonSettings, tmp_path: Path
) -> None:
    store = open_object_store(common)
    blobs = {name(r): artifacts.dump_model(p) for r, p in PARTITIONS.items()}
    blobs[FLEET] = artifacts.dump_model(GLOBAL)
    for model, blob in blobs.items():
        store.put(key(model), blob)
    sizes = sorted(len(blobs[name(r)]) for r in ROUTES)
    budget = sizes[-1] + sizes[-2] + sizes[0] // 2  # any two fit, no three
    assert budget < sum(sizes[:3])
    env = {
        **stack_env(common),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_SERVING_MODEL_MEMORY_MB": repr(budget / 2**20),
        "DRIFTLOOP_SERVING_COMPILED_FORM": "false",  # the estimate is then the artifact's size
    }
    async with registry_server(common), RegistryClient(common) as client:
        await client.create_model(FLEET, spec_yaml=SPEC)
        for route in ROUTES:  # before the global model: nothing to beat, all promoted
            await register(client, name(route), blobs[name(route)])
        await register(client, FLEET, blobs[FLEET])
        assert {m.name: m.fleet for m in await client.list_models(fleet=FLEET)} == {
            name(r): FLEET for r in ROUTES
        }
        log = tmp_path / "serving.log"
        proc = start_process(
            [sys.executable, "-m", "driftloop.services.serving"], env=env, log_path=str(log)
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{common.ports.serving}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            await wait_for(lambda: _ready(stub), 60, "serving ready")
            assert (
                scrape(common.ports.metrics_serving)["driftloop_serving_partition_models_loaded"]
                == 0
            )  # partition models wait for their first request

            # rows of routes 2, 9 (no partition model: the global one) and 1, in that order
            rows = [(2, 0.5, 1.0), (9, -1.0, 2.0), (1, 1.5, -0.5), (2, 0.0, 0.0)]
            answer = await stub.ModelInfer(request(rows, "mixed"))
            want = [predicted(PARTITIONS.get(r[0], GLOBAL), [r])[0] for r in rows]
            np.testing.assert_allclose(answer.outputs[0].contents.fp64_contents, want, rtol=1e-9)
            assert (answer.model_name, answer.model_version) == (FLEET, "")
            assert json.loads(answer.parameters["driftloop_answered_by"].string_param) == {
                name(2): "1",
                FLEET: "1",
                name(1): "1",
            }

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ModelInfer(request(rows, "no-route", route=False))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "partition column 'route_id' is missing" in (refused.value.details() or "")

            # `driftloop predict` reads the fleet's inputs (features and route_id) from
            # ModelMetadata and goes through the same routing
            csv = tmp_path / "trips.csv"
            pd.DataFrame(rows, columns=["route_id", "x1", "x2"]).to_csv(csv, index=False)
            scored = tmp_path / "scored.parquet"
            await asyncio.to_thread(predict_file, common, csv, scored, FLEET)
            np.testing.assert_allclose(
                pd.read_parquet(scored)["prediction"].to_numpy(), want, rtol=1e-9
            )

            # every partition in turn, concurrently, with room for two: evictions and reloads
            cycle = [(ROUTES[i % 4], 0.1 * i, -0.2 * i) for i in range(48)]
            replies = await asyncio.gather(
                *(stub.ModelInfer(request([row], f"c{i}")) for i, row in enumerate(cycle))
            )
            for row, reply in zip(cycle, replies, strict=True):
                got = reply.outputs[0].contents.fp64_contents[0]
                assert got == pytest.approx(predicted(PARTITIONS[row[0]], [row])[0], rel=1e-9)
            seen = scrape(common.ports.metrics_serving)
            assert seen["driftloop_serving_partition_evictions_total"] >= 2
            assert seen["driftloop_serving_partition_models_loaded"] == 2
            assert seen["driftloop_serving_partition_model_bytes"] <= budget
            assert seen["driftloop_serving_partition_load_seconds_count"] >= 4
            assert seen["driftloop_serving_partition_cache_misses_total"] >= 4

            def mine(record: Any, event: Any) -> bool:
                return event.type == "PredictionLog" and (
                    event.prediction_log.model in (FLEET, name(1), name(2))
                )

            def has_mixed(found: list[Any]) -> bool:
                ids = {
                    (e.prediction_log.model, e.prediction_log.fleet, i)
                    for e in found
                    for i in ipc_to_table(e.prediction_log.arrow_ipc)["_request_id"].to_pylist()
                }
                wanted = {
                    (name(2), FLEET, "mixed:0"),
                    (FLEET, "", "mixed:1"),
                    (name(1), FLEET, "mixed:2"),
                    (name(2), FLEET, "mixed:3"),
                }
                return wanted <= ids

            await read_events(common.bootstrap(), topics.PREDICTIONS, mine, has_mixed)
        finally:
            stop_process(proc)
            await channel.close()
    assert proc.returncode == 0, log.read_text()[-3000:]


async def _ready(stub: pb_grpc.GRPCInferenceServiceStub) -> bool:
    return (await stub.ServerReady(pb.ServerReadyRequest(), timeout=2)).ready
