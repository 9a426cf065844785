"""Shadow mode through the real stack: v2 passes the offline checks and becomes the shadow;
serving keeps answering with v1 while it scores v2 on a copy of the traffic; labels published on
driftloop.labels let monitoring report live evidence; the registry promotes v2 and serving
answers with it. `versions` shows the shadow alias, `trace` the shadow step and the evidence."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pandas as pd
import pytest
from google.protobuf import struct_pb2
from support import stack_env, wait_for, wait_until

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.protos.registry.v1 import registry_pb2 as rpb
from driftloop.protos.registry.v1 import registry_pb2_grpc
from driftloop.shared.bus import topics
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.cli.commands.demo_data import FEATURES, make_rows
from driftloop.shared.settings import CommonSettings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
MODEL = "shadowed"
ROWS_PER_REQUEST = 10


def cli(common: CommonSettings, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "driftloop.shared.cli", *args],
        env={**os.environ, **stack_env(common), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"{args}: {out.stdout[-2000:]} {out.stderr[-2000:]}"
    return out.stdout


def ingest(common: CommonSettings, rows: int, drifted: bool, rng: np.random.Generator) -> None:
    with grpc.insecure_channel(common.address("ingestion")) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        for _ in range(rows // 500):
            structs = []
            for record in make_rows(500, drifted=drifted, rng=rng).to_dict(orient="records"):
                s = struct_pb2.Struct()
                s.update(record)
                structs.append(s)
            stub.Ingest(ingestion_pb2.IngestRequest(dataset=MODEL, rows=structs), timeout=30)


def infer(common: CommonSettings, request_id: str, frame: pd.DataFrame) -> str:
    request = v2.ModelInferRequest(model_name=MODEL, id=request_id)
    for name in FEATURES:
        tensor = request.inputs.add(name=name, shape=[len(frame)])
        if name == "segment":
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.extend(v.encode() for v in frame[name])
        else:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.extend(float(v) for v in frame[name])
    with grpc.insecure_channel(common.address("serving")) as channel:
        try:
            reply = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=5)
        except grpc.RpcError:
            return ""
    return reply.model_version


def version_of(common: CommonSettings, version: str) -> rpb.ModelVersion | None:
    with grpc.insecure_channel(common.address("registry")) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        try:
            return stub.GetVersion(rpb.GetVersionRequest(model=MODEL, version=version))
        except grpc.RpcError:
            return None


def status_of(common: CommonSettings, version: str) -> str:
    found = version_of(common, version)
    return found.status if found else ""


async def test_shadow_is_scored_on_live_labels_then_promoted(any_stack: CommonSettings) -> None:
    common = any_stack
    rng = np.random.default_rng(21)
    policy = rpb.PromotionPolicy(mode="shadow", margin=0.02, shadow_min_labels=100)
    with grpc.insecure_channel(common.address("registry")) as channel:
        registry_pb2_grpc.RegistryServiceStub(channel).CreateModel(
            rpb.CreateModelRequest(
                name=MODEL, dataset=MODEL, target="label", spec=rpb.TrainingSpec(policy=policy)
            )
        )
    ingest(common, 1000, drifted=False, rng=rng)  # v1: no champion, so promoted at once
    probe = make_rows(1, rng=rng)
    wait_until(lambda: infer(common, "probe", probe) == "1", 120, "serving answering with v1")

    ingest(common, 1000, drifted=True, rng=rng)
    trained = cli(common, "train", MODEL, "--reason", "new data")
    assert "shadow" in trained, trained
    assert status_of(common, "2") == "shadow" and infer(common, "probe", probe) == "1"

    publisher = EventPublisher(common.bootstrap(), "e2e-labels")
    await publisher.start()
    pending: list[tuple[list[str], list[str]]] = []
    wave = 0

    async def traffic_then_labels() -> bool:
        """One wave of drifted traffic; the labels of the previous wave (its shadow rows have
        been logged by now). True once serving answers with v2."""
        nonlocal wave
        wave += 1
        frame = make_rows(100, drifted=True, rng=rng)
        answered = set()
        ids, labels = [], []
        for start in range(0, len(frame), ROWS_PER_REQUEST):
            part = frame.iloc[start : start + ROWS_PER_REQUEST]
            request_id = f"w{wave}-{start}"
            answered.add(infer(common, request_id, part))
            ids += [f"{request_id}:{i}" for i in range(len(part))]
            labels += list(part["label"])
        if "2" in answered:
            return True
        assert answered == {"1"}, answered  # the shadow never answers
        for old_ids, old_labels in pending:
            batch = events_pb2.LabelBatch(model=MODEL, request_ids=old_ids, labels=old_labels)
            await publisher.publish(topics.LABELS, MODEL, publisher.event(batch))
        pending[:] = [(ids, labels)]
        return False

    try:
        await wait_for(traffic_then_labels, 150, "v2 promoted on live evidence and served")
    finally:
        await publisher.stop()

    promoted = version_of(common, "2")
    assert promoted is not None and promoted.status == "production"
    report = json.loads(cli(common, "versions", MODEL, "--json").strip().splitlines()[-1])
    moves = [(a.get("alias"), a.get("version", ""), a["action"]) for a in report["alias_history"]]
    assert moves == [
        ("production", "1", "promote"),
        ("shadow", "2", "shadow"),
        ("shadow", "", "clear"),
        ("production", "2", "promote"),
    ], moves
    assert "labelled live predictions" in report["alias_history"][-1]["reason"]

    chain = json.loads(cli(common, "trace", f"{MODEL}:2", "--json").strip().splitlines()[-1])
    steps = [s["step"] for s in chain["steps"]]
    for expected in (
        "version 2 registered",
        "version 2 runs as a shadow",
        "version 2 live evidence",
        "version 2 promoted",
        "version 2 deployed",
    ):
        assert expected in steps, steps
    assert chain["complete"], chain
