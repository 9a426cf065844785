"""What `driftloop bench serving` measures against: a real trained model, and the embedded broker,
the registry and serving started as processes on free ports in a temporary data directory.

The model is all-numeric and its ColumnTransformer selects columns by position, so the same
[N, F] request works for driftloop (which passes a DataFrame) and MLServer (which passes numpy).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.shared import artifacts
from driftloop.shared.cli.children import die_with_parent
from driftloop.shared.cli.stack.broker import broker_argv, free_port, wait_for_port
from driftloop.shared.errors import Unavailable
from driftloop.shared.registry_client import RegistryClient, run_sync
from driftloop.shared.registry_types import Candidate
from driftloop.shared.run_record import RunRecord, run_record_key
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

MODEL = "bench"
FEATURES = [f"f{i}" for i in range(8)]
TARGET = "label"


def bench_frame(rows: int, seed: int) -> pd.DataFrame:
    """Eight numeric features, three classes decided by two linear scores, 5% label noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    frame = pd.DataFrame(x, columns=FEATURES)
    a, b = x[:, 0] + 0.5 * x[:, 1], x[:, 2] - x[:, 3]
    label = np.where(a > 0.5, "high", np.where(b > 0, "mid", "low"))
    noise = rng.random(rows) < 0.05
    label[noise] = rng.choice(["high", "mid", "low"], int(noise.sum()))
    frame[TARGET] = label
    return frame


def train_bench_model(seed: int = 0, rows: int = 2000) -> tuple[Any, float]:
    """The pipeline training builds for numeric features (median impute, scale, logistic
    regression), fitted on a DataFrame so it carries feature_names_in_; returns (model, holdout
    accuracy). Columns are picked by position (see the module docstring)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from driftloop.services.training.core.domain import ModelSpec
    from driftloop.services.training.core.trainer import make_estimator

    frame = bench_frame(rows, seed)
    train, holdout = frame.iloc[: rows * 4 // 5], frame.iloc[rows * 4 // 5 :]
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    prep = ColumnTransformer([("num", numeric, list(range(len(FEATURES))))])
    pipeline = Pipeline([("prep", prep), ("model", make_estimator(ModelSpec()))])
    pipeline.fit(train[FEATURES], train[TARGET].astype(str))
    accuracy = float((pipeline.predict(holdout[FEATURES]) == holdout[TARGET]).mean())
    return pipeline, accuracy


@dataclass
class Stack:
    """The running processes and how to reach them."""

    common: CommonSettings
    serving: str
    """host:port of serving's V2 API."""
    procs: dict[str, subprocess.Popen[bytes]]
    logs: Path


def _env(common: CommonSettings, extra: dict[str, str]) -> dict[str, str]:
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_LOG_JSON": "true",
        "DRIFTLOOP_LOG_LEVEL": "warning",
    }
    for name, value in common.ports.model_dump().items():
        env[f"DRIFTLOOP_PORTS__{name.upper()}"] = str(value)
    return {**os.environ, **env, **extra}


def _start(argv: list[str], env: dict[str, str] | None, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def running_stack(serving_env: dict[str, str] | None = None) -> Any:
    """Broker, registry and serving as processes in a temporary data dir; stopped on exit."""
    data_dir = Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
    ports = {
        name: free_port()
        for name in ("broker", "registry", "serving", "metrics_registry", "metrics_serving")
    }
    common = CommonSettings(data_dir=data_dir, ports=ports)  # type: ignore[arg-type]
    logs = data_dir / "logs"
    logs.mkdir()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["broker"] = _start(broker_argv(ports["broker"]), None, logs / "broker.log")
        wait_for_port("127.0.0.1", ports["broker"], timeout=30)
        for name, extra in (("registry", {}), ("serving", serving_env or {})):
            argv = [sys.executable, "-m", f"driftloop.services.{name}"]
            procs[name] = _start(argv, _env(common, extra), logs / f"{name}.log")
        stack = Stack(common, common.address("serving"), procs, logs)
        _wait_ready(stack)
        yield stack
    finally:
        for name in ("serving", "registry", "broker"):
            if name in procs:
                _stop(procs[name])
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ready(stack: Stack, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(stack.serving) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        while True:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    tail = (stack.logs / f"{name}.log").read_text()[-2000:]
                    raise Unavailable(f"{name} exited while starting: {tail}")
            try:
                if stub.ServerReady(v2.ServerReadyRequest(), timeout=1).ready:
                    return
            except grpc.RpcError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise Unavailable(f"serving not ready after {timeout}s; logs in {stack.logs}")
            time.sleep(0.1)  # poll: processes starting


class BenchRegistry:
    """Creates the bench model and registers/promotes versions through the registry client."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._store = open_object_store(stack.common)
        self._channel = grpc.insecure_channel(stack.serving)
        self._v2 = v2_grpc.GRPCInferenceServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def create_model(self) -> None:
        run_sync(self._stack.common, lambda r: r.create_model(MODEL, MODEL, TARGET), timeout=10)

    def add_version(self, pipeline: Any, accuracy: float) -> str:
        """Store the artifact, register it, and promote it by hand when the policy did not."""
        data = artifacts.dump_model(pipeline)
        run_id = uuid.uuid4().hex
        key = f"artifacts/{MODEL}/{run_id}/model.skops"
        self._store.put(key, data)
        metrics = {"accuracy": accuracy, "f1_macro": accuracy}
        # the registry takes metrics from the run record, as training writes it
        self._store.put(run_record_key(MODEL, run_id), RunRecord(run_id, metrics).to_json())
        candidate = Candidate(
            model=MODEL,
            run_id=run_id,
            artifact_uri=key,
            artifact_sha256=artifacts.sha256(data),
            metrics=metrics,
        )

        async def register(registry: RegistryClient) -> str:
            done = await registry.register_version(candidate)
            if not done.promoted:
                await registry.promote(MODEL, done.version.version, "bench swap")
            return done.version.version

        return run_sync(self._stack.common, register, timeout=10)

    def wait_served(self, version: str, timeout: float = 60.0) -> float:
        """Block until serving answers with `version` as production; the time.time() it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            meta = self._v2.ModelMetadata(v2.ModelMetadataRequest(name=MODEL), timeout=5)
            if meta.versions and meta.versions[0] == version:
                return time.time()
            time.sleep(0.01)  # poll: the swap happens in the serving process
        raise Unavailable(f"serving did not swap in version {version} within {timeout}s")

    def wait_model(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self._v2.ModelReady(v2.ModelReadyRequest(name=MODEL), timeout=5).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)  # poll: the first deploy happens in the serving process
        raise Unavailable(f"serving did not load model {MODEL!r} within {timeout}s")
