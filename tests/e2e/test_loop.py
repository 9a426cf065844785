"""The whole loop on the real stack, on the embedded broker and on Apache Kafka: every service a
separate process, drift closes itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from rich.console import Console
from support import stack_env, wait_until

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.shared.cli.commands.demo import Demo
from driftloop.shared.cli.commands.demo_data import make_rows
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.settings import SERVICES, CommonSettings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _status(common: CommonSettings) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "driftloop.shared.cli", "status", "--json"],
        env={**os.environ, **stack_env(common)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_drift_retrains_promotes_and_redeploys(any_stack: CommonSettings) -> None:
    common = any_stack
    demo = Demo(common, Console(quiet=True), rate=300)
    summary = asyncio.run(demo.run(timeout=300))

    assert summary["versions"] == ["1", "2"]
    assert summary["accuracy_after_redeploy"] > summary["accuracy_during_drift"]
    steps = [s["step"] for s in summary["timeline"]]
    assert "drift detected" in steps and "version 2 deployed" in steps

    with grpc.insecure_channel(common.address("serving")) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        request = demo._request(make_rows(3, drifted=True, rng=demo.rng))
        reply = stub.ModelInfer(request, timeout=10)
    assert reply.model_version == "2"
    assert len(reply.outputs[0].contents.bytes_contents) == 3

    _kill_serving_and_see_it_come_back_with(common, request, "2")

    report = _status(common)
    assert {n for n, s in report["services"].items() if s["healthy"]} == set(SERVICES)
    model = next(m for m in report["models"] if m["name"] == demo.name)
    assert model["production_version"] == "2"
    assert report["latest"]["deployment"]["version"] == "2"


def _kill_serving_and_see_it_come_back_with(
    common: CommonSettings, request: v2.ModelInferRequest, version: str
) -> None:
    """kill -9 serving: the supervisor restarts it and it reconciles production from the
    registry (on either broker: the bus is never its source of truth)."""
    before = stack.read_endpoints(common)["services"]["serving"]["pid"]
    os.kill(before, signal.SIGKILL)
    wait_until(
        lambda: stack.read_endpoints(common)["services"]["serving"]["pid"] not in (None, before),
        60,
        "serving restarted by the supervisor",
    )

    def answers() -> bool:
        with grpc.insecure_channel(common.address("serving")) as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            return stub.ModelInfer(request, timeout=5).model_version == version

    wait_until(answers, 60, f"restarted serving answering with version {version}")


def test_demo_command_closes_the_loop(tmp_path: Path) -> None:
    """Embedded broker only: `driftloop demo` is the newcomer's command on the embedded
    defaults and takes no broker (the loop on Kafka is the test above)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftloop.shared.cli",
            "demo",
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
    assert summary["loop_closed"] is True
    assert summary["versions"] == ["1", "2"]
    assert summary["drift_to_serving_s"] > 0
    for key in ("accuracy_before_drift", "accuracy_during_drift", "accuracy_after_redeploy"):
        assert 0.0 <= summary[key] <= 1.0
