"""Chaos rows for hostile V2 callers (#21): while a client sends small requests, another sends
an oversized request and requests made of many tiny input tensors. A row records their statuses,
the small requests' p99 beside their unloaded p99 (as a ratio; reported, never asserted), and
serving's resident memory before, at its peak and after.

The attacker runs as its own process (`python -m driftloop.shared.cli.chaos.hostile ADDRESS
MODEL BYTES COUNT`), so building and sending its requests never holds the measuring client's GIL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
import numpy as np

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.shared.cli.chaos.infra import pid_of, rss_mb
from driftloop.shared.cli.chaos.steps import Chaos, Row

MB = 1024 * 1024
BASELINE_REQUESTS = 200
ATTACKS = 3


def many_tiny_tensors(model: str, total_bytes: int) -> bytes:
    """A serialized ModelInferRequest of FP32 [1] tensors, ~total_bytes long (the probe's
    shape; written as bytes because building the message would cost gigabytes)."""
    one = v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1])
    one.contents.fp32_contents.append(1.0)
    body = one.SerializeToString()
    field = b"\x2a" + bytes([len(body)]) + body
    head = v2.ModelInferRequest(model_name=model).SerializeToString()
    return head + field * (total_bytes // len(field))


def oversized_request(c: Chaos, row: Row) -> None:
    """One 60 MB request of tiny tensors: over serving's 16 MiB limit, refused unread."""
    _attack(c, row, 60 * MB, grpc.StatusCode.RESOURCE_EXHAUSTED)


def many_inputs(c: Chaos, row: Row) -> None:
    """Requests of ~700,000 tiny input tensors (15 MB, under the size limit): refused before
    any tensor is converted, since the model takes one tensor per feature."""
    _attack(c, row, 15 * MB, grpc.StatusCode.INVALID_ARGUMENT)


def _settled_rss(pid: int, before: float, timeout: float = 10.0) -> float:
    """Serving's RSS once a refused request's memory was given back (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    rss = rss_mb(pid)
    while rss - before >= 200 and time.monotonic() < deadline:
        time.sleep(0.2)  # poll: the trim runs after the refused call has answered
        rss = rss_mb(pid)
    return rss


def _p99(latencies: list[float]) -> float:
    return float(np.percentile(latencies, 99)) if latencies else 0.0


def _attack(c: Chaos, row: Row, size: int, expected: grpc.StatusCode) -> None:
    h = c.h
    stub = v2_grpc.GRPCInferenceServiceStub(h.channel("serving"))
    small = h.infer_request(1)
    baseline = []
    for _ in range(BASELINE_REQUESTS):
        started = time.perf_counter()
        stub.ModelInfer(small, timeout=10)
        baseline.append((time.perf_counter() - started) * 1000)
    pid = pid_of(h.common, "serving")
    before = rss_mb(pid) if pid else 0.0
    peak = [before]
    loaded: list[float] = []
    failures: list[str] = []
    done, measuring = threading.Event(), threading.Event()

    def background() -> None:
        while not done.is_set():
            started = time.perf_counter()
            try:
                stub.ModelInfer(small, timeout=10)
                if measuring.is_set():
                    loaded.append((time.perf_counter() - started) * 1000)
            except grpc.RpcError as exc:
                failures.append(exc.code().name)  # type: ignore[attr-defined]
            if pid:
                peak[0] = max(peak[0], rss_mb(pid))

    worker = threading.Thread(target=background, daemon=True)
    worker.start()
    try:
        statuses = _attacker(h.common.address("serving"), h.model, size, ATTACKS, measuring)
    finally:
        done.set()
        worker.join()
    after = _settled_rss(pid, before) if pid else 0.0
    unloaded, under_attack = _p99(baseline), _p99(loaded)
    row.injected = True
    row.info.update(
        request_mb=round(size / MB, 1),
        statuses=statuses,
        p99_ms_unloaded=round(unloaded, 2),
        p99_ms_during=round(under_attack, 2),
        p99_ratio=round(under_attack / unloaded, 2) if unloaded else None,
        small_requests_during=len(loaded),
        rss_before_mb=round(before),
        rss_peak_mb=round(peak[0]),
        rss_after_mb=round(after),
    )
    row.checks["refused_with_" + expected.name.lower()] = statuses == [expected.name] * ATTACKS
    row.checks["no_small_request_failed"] = not failures
    row.checks["rss_growth_under_200mb"] = after - before < 200
    row.note = f"{ATTACKS} x {size // MB} MB of tiny tensors under a background of small requests"


def _attacker(
    address: str, model: str, size: int, count: int, measuring: threading.Event
) -> list[str]:
    """Run the attacker process (see the module docstring): once it has built its request and
    says so, set `measuring` and let it go; return its statuses."""
    argv = [sys.executable, "-m", __name__, address, model, str(size), str(count)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        ready = proc.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"the attacker process did not start: {ready!r}")
        measuring.set()  # from here on the small requests count as "during"
        out, err = proc.communicate("go\n", timeout=120 + 60 * count)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    if proc.returncode != 0:
        raise RuntimeError(f"the attacker process failed: {err[-2000:]}")
    return list(json.loads(out.strip().splitlines()[-1]))


def attack(address: str, model: str, size: int, count: int) -> list[str]:
    """Send `count` requests of tiny tensors, ~`size` bytes each, on a connection of its own
    (sharing the small requests' HTTP/2 connection would measure the client's head-of-line
    blocking instead); the status of each."""
    body = many_tiny_tensors(model, size)
    channel = grpc.insecure_channel(
        address,
        options=[("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1)],
    )
    raw = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda b: b,
        response_deserializer=v2.ModelInferResponse.FromString,
    )
    statuses: list[str] = []
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()  # the measuring side says go
        for _ in range(count):
            try:
                raw(body, timeout=60)
                statuses.append("OK")
            except grpc.RpcError as exc:
                statuses.append(exc.code().name)  # type: ignore[attr-defined]
    finally:
        channel.close()
    return statuses


HOSTILE: dict[str, tuple[str, Any]] = {
    "oversized_request": ("60 MB ModelInfer of tiny tensors", oversized_request),
    "many_inputs": ("ModelInfer of ~700,000 input tensors", many_inputs),
}


if __name__ == "__main__":
    address, model, size, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.stdout.write(json.dumps(attack(address, model, size, count)) + "\n")
