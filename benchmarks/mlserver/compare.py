"""Stand up MLServer (mlserver + mlserver-sklearn) with the model `driftloop bench serving` trains,
then run that benchmark against it: `.venv/bin/python benchmarks/mlserver/compare.py [BENCH ARGS]`.

MLServer runs from its own virtualenv (benchmarks/mlserver/setup.sh), loading the same pipeline
saved with joblib; `--serve-only` just starts it and prints its gRPC address until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import joblib

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.shared.cli.stack.broker import free_port
from driftloop.shared.cli.bench.serving_stack import MODEL, train_bench_model

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def write_model_repository(root: Path, parallel_workers: int) -> tuple[int, int]:
    """settings.json + <MODEL>/model-settings.json + <MODEL>/model.joblib; returns (grpc, http)."""
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    settings = {
        "grpc_port": grpc_port,
        "http_port": http_port,
        "metrics_port": metrics_port,
        "parallel_workers": parallel_workers,
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    model_dir = root / MODEL
    model_dir.mkdir()
    pipeline, _ = train_bench_model()  # the same seed and data as the driftloop side
    joblib.dump(pipeline, model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL,
                "implementation": "mlserver_sklearn.SKLearnModel",
                # why predict_proba: MLServer's gRPC encoder fails on string class labels
                # ("expected bytes, str found"), and driftloop's classes are strings; driftloop
                # answers label + probabilities from one predict_proba call, so this is like
                # for like.
                "parameters": {
                    "uri": "./model.joblib",
                    "version": "1",
                    "extra": {"predict_fn": "predict_proba"},
                },
            },
            indent=2,
        )
    )
    return grpc_port, http_port


def wait_ready(address: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"mlserver exited with {proc.returncode} while starting")
            try:
                if stub.ModelReady(v2.ModelReadyRequest(name=MODEL), timeout=1).ready:
                    return
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.2)  # poll: MLServer is starting
    raise SystemExit(f"mlserver not ready on {address} after {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--venv", default=str(REPO / ".bench" / "mlserver-venv"))
    parser.add_argument("--parallel-workers", type=int, default=1, help="MLServer's setting")
    parser.add_argument("--serve-only", action="store_true")
    args, bench_args = parser.parse_known_args()
    venv = (
        subprocess.run(
            [str(HERE / "setup.sh"), args.venv], check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    root = Path(tempfile.mkdtemp(prefix="driftloop-mlserver-"))
    try:
        grpc_port, _ = write_model_repository(root, args.parallel_workers)
        log = open(root / "mlserver.log", "wb")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(
            [str(Path(venv) / "bin" / "mlserver"), "start", str(root)],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        address = f"127.0.0.1:{grpc_port}"
        try:
            wait_ready(address, proc)
            if args.serve_only:
                print(f"MLServer serving model {MODEL!r} on {address} (V2 gRPC); Ctrl-C stops it")
                stop = {signal.SIGINT, signal.SIGTERM}
                signal.pthread_sigmask(signal.SIG_BLOCK, stop)
                signal.sigwait(stop)
                return 0
            driftloop = str(Path(sys.executable).parent / "driftloop")
            bench = [driftloop, "bench", "serving", "--against", address, "--model", MODEL]
            return subprocess.run([*bench, *bench_args]).returncode
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
