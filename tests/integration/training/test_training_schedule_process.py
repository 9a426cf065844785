"""The schedule trigger inside a real training process: a model whose spec sets a schedule gets
its run for the current slot once curated data is there, and a training process killed and
started again neither repeats the slot nor forgets it (the run table decides, not memory)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pytest
from support import stack_env, start_process, stop_process, wait_until

from driftloop.protos.registry.v1 import registry_pb2 as rpb
from driftloop.protos.registry.v1 import registry_pb2_grpc
from driftloop.protos.training.v1 import training_pb2 as tpb
from driftloop.protos.training.v1 import training_pb2_grpc
from driftloop.services.validation.core import curation
from driftloop.shared.cli.stack.broker import wait_for_port
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

SPEC = """
dataset: flowers
target: label
estimator: logistic_regression
schedule: every 1d
"""


def curate(common: CommonSettings, batch_id: str, n: int) -> None:
    rng = np.random.default_rng(len(batch_id) + n)
    x = rng.normal(size=n)
    table = pa.table(
        {
            "x": x,
            "label": np.where(x > 0.2, "yes", "no"),
            "_ingested_at": time.time() - 60 + np.arange(n, dtype=float) / n,
        }
    )
    curation.curate_batch(open_object_store(common), "flowers", batch_id, table, "schema-1")


def start(service: str, common: CommonSettings, log: Path) -> Any:
    env = {
        **stack_env(common),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_LOG_LEVEL": "debug",
        "DRIFTLOOP_TRAINING_SCHEDULE_POLL_S": "0.3",
    }
    argv = [sys.executable, "-m", f"driftloop.services.{service}"]
    proc = start_process(argv, env=env, log_path=str(log))
    wait_for_port("127.0.0.1", common.ports.grpc(service), timeout=60)
    return proc


def schedule_runs(common: CommonSettings) -> list[tpb.Run]:
    with grpc.insecure_channel(common.address("training")) as channel:
        runs = training_pb2_grpc.TrainingServiceStub(channel).ListRuns(
            tpb.ListRunsRequest(model="iris"), timeout=10
        )
    return [r for r in runs.runs if r.trigger == "schedule"]


def checked(log: Path, why: str) -> bool:
    """The training process logged a schedule verdict for iris that starts with `why`."""
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("event") == "schedule_checked" and entry.get("model") == "iris":
            if str(entry.get("why", "")).startswith(why):
                return True
    return False


def test_a_scheduled_model_runs_once_per_slot_across_a_training_restart(
    common: CommonSettings, tmp_path: Path
) -> None:
    registry = start("registry", common, tmp_path / "registry.log")
    first_log = tmp_path / "training.log"
    training = start("training", common, first_log)
    try:
        with grpc.insecure_channel(common.address("registry")) as channel:
            registry_pb2_grpc.RegistryServiceStub(channel).CreateModel(
                rpb.CreateModelRequest(name="iris", spec_yaml=SPEC), timeout=10
            )
        wait_until(lambda: checked(first_log, "no curated data"), 60, "a tick without data")
        assert schedule_runs(common) == [], "nothing to train on: no run"

        curate(common, "b1", 400)
        [run] = wait_until(lambda: schedule_runs(common), 60, "the slot's run")
        done = wait_until(
            lambda: [r for r in schedule_runs(common) if r.state in ("succeeded", "failed")],
            120,
            "the scheduled run to finish",
        )
        assert done[0].state == "succeeded", done[0].error
        assert done[0].registered_version == "1" and done[0].manifest_version == 1

        os.killpg(training.pid, signal.SIGKILL)
        training.wait(10)
        curate(common, "b2", 400)  # newer data, but the slot already has its run
        second_log = tmp_path / "training-2.log"
        training = start("training", common, second_log)
        wait_until(lambda: checked(second_log, "slot has its run"), 60, "a tick after restart")
        assert [r.run_id for r in schedule_runs(common)] == [run.run_id]
    finally:
        stop_process(training)
        stop_process(registry)
