"""Approval mode and rollback through the real stack and the CLI: a passing candidate waits,
`driftloop approve` makes serving answer with it, `driftloop rollback` makes serving answer
with the previous version again; versions, runs, trace and train --reproduce tell the story."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from support import stack_env, wait_until

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.protos.registry.v1 import registry_pb2 as rpb
from driftloop.protos.registry.v1 import registry_pb2_grpc
from driftloop.shared.cli.commands.demo_data import FEATURES, make_rows
from driftloop.shared.settings import CommonSettings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
MODEL = "gated"


def cli(common: CommonSettings, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "driftloop.shared.cli", *args],
        env={**os.environ, **stack_env(common), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ok:
        assert out.returncode == 0, f"{args}: {out.stdout[-2000:]} {out.stderr[-2000:]}"
    return out


def last_json(out: subprocess.CompletedProcess[str]) -> object:
    return json.loads(out.stdout.strip().splitlines()[-1])


def ingest(common: CommonSettings, rows: int, drifted: bool, rng: np.random.Generator) -> None:
    with grpc.insecure_channel(common.address("ingestion")) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        for _ in range(rows // 500):
            frame = make_rows(500, drifted=drifted, rng=rng)
            structs = []
            for record in frame.to_dict(orient="records"):
                s = struct_pb2.Struct()
                s.update(record)
                structs.append(s)
            stub.Ingest(ingestion_pb2.IngestRequest(dataset=MODEL, rows=structs), timeout=30)


def served_version(common: CommonSettings) -> str:
    request = v2.ModelInferRequest(model_name=MODEL)
    row = make_rows(1, drifted=False, rng=np.random.default_rng(0))
    for name in FEATURES:
        tensor = request.inputs.add(name=name, shape=[1])
        if name == "segment":
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.append(row[name][0].encode())
        else:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.append(float(row[name][0]))
    with grpc.insecure_channel(common.address("serving")) as channel:
        try:
            return (
                v2_grpc.GRPCInferenceServiceStub(channel)
                .ModelInfer(request, timeout=5)
                .model_version
            )
        except grpc.RpcError:
            return ""


def status_of(common: CommonSettings, version: str) -> str:
    with grpc.insecure_channel(common.address("registry")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        try:
            return stub.GetVersion(rpb.GetVersionRequest(model=MODEL, version=version)).status
        except grpc.RpcError:
            return ""


def test_approval_then_rollback_through_serving(any_stack: CommonSettings) -> None:
    common = any_stack
    rng = np.random.default_rng(11)
    spec = rpb.TrainingSpec(policy=rpb.PromotionPolicy(mode="approval", margin=1e-9))
    with grpc.insecure_channel(common.address("registry")) as channel:
        registry_pb2_grpc.RegistryServiceStub(channel).CreateModel(
            rpb.CreateModelRequest(name=MODEL, dataset=MODEL, target="label", spec=spec)
        )
    ingest(common, 1000, drifted=False, rng=rng)  # enough rows: training starts by itself
    wait_until(lambda: status_of(common, "1") == "pending_approval", 120, "v1 waiting")
    assert served_version(common) == "", "nothing is served before approval"

    cli(common, "approve", MODEL, "1", "--reason", "first model looks fine")
    wait_until(lambda: served_version(common) == "1", 60, "serving answering with v1")

    ingest(common, 1000, drifted=True, rng=rng)  # the world moves; v2 learns it
    trained = cli(common, "train", MODEL, "--reason", "new data")
    assert "not promoted" in trained.stdout and "waiting for approval" in trained.stdout
    assert status_of(common, "2") == "pending_approval" and served_version(common) == "1"

    cli(common, "approve", MODEL, "2", "--reason", "beats v1 on recent rows")
    wait_until(lambda: served_version(common) == "2", 60, "serving answering with v2")

    cli(common, "rollback", MODEL, "--reason", "segment b complaints")
    wait_until(lambda: served_version(common) == "1", 60, "serving back on v1 after rollback")

    report = last_json(cli(common, "versions", MODEL, "--json"))
    assert isinstance(report, dict)
    moves = [(a["version"], a["action"]) for a in report["alias_history"]]
    assert moves == [("1", "approve"), ("2", "approve"), ("1", "rollback")]
    assert report["alias_history"][-1]["reason"] == "segment b complaints"
    assert report["alias_history"][-1]["actor"].startswith("operator")
    assert [v["status"] for v in report["versions"]] == ["production", "archived"]

    chain = last_json(cli(common, "trace", f"{MODEL}:2", "--json"))
    assert isinstance(chain, dict)
    assert chain["complete"], chain
    steps = [s["step"] for s in chain["steps"]]
    for expected in (
        "training run queued",
        "version 2 registered",
        "version 2 waiting for approval",
        "version 2 approved and promoted",
        "version 2 deployed",
        "production moved to v1",
    ):
        assert expected in steps, steps

    runs = last_json(cli(common, "runs", MODEL, "--json"))
    assert isinstance(runs, list) and [r["state"] for r in runs] == ["succeeded", "succeeded"]

    reproduced = cli(common, "train", "--reproduce", f"{MODEL}:2")
    assert "reproduced: same metrics and the same predictions" in reproduced.stdout
