"""Chaos rows for hostile V2 callers (#21): while a client sends small requests, another sends
an oversized request and requests made of many tiny input tensors. A row records their statuses,
the small requests' p99 during the attacks beside their p99 in quiet windows of the same length
interleaved with them (as a ratio; reported, never asserted), and serving's resident memory
before, at its peak and after.

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
from driftloop.shared.cli.children import die_with_parent

MB = 1024 * 1024
WARMUP_REQUESTS = 50
ROUNDS = 5
WINDOW_S = 2.0
"""Each round: a quiet window this long, then one in which the attacker sends its requests back
to back for as long (at least one request; the quiet window that follows matches what it took)."""


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
    for _ in range(WARMUP_REQUESTS):
        stub.ModelInfer(small, timeout=10)
    pid = pid_of(h.common, "serving")
    before = rss_mb(pid) if pid else 0.0
    peak = [before]
    samples: dict[str, list[float]] = {"quiet": [], "attack": []}
    window: list[str | None] = [None]
    failures: list[str] = []
    done = threading.Event()

    def background() -> None:
        while not done.is_set():
            started = time.perf_counter()
            try:
                stub.ModelInfer(small, timeout=10)
                which = window[0]
                if which is not None:
                    samples[which].append((time.perf_counter() - started) * 1000)
            except grpc.RpcError as exc:
                failures.append(exc.code().name)  # type: ignore[attr-defined]
            if pid:
                peak[0] = max(peak[0], rss_mb(pid))

    worker = threading.Thread(target=background, daemon=True)
    worker.start()
    try:
        statuses = _rounds(h.common.address("serving"), h.model, size, window)
    finally:
        done.set()
        worker.join()
    after = _settled_rss(pid, before) if pid else 0.0
    quiet, under_attack = _p99(samples["quiet"]), _p99(samples["attack"])
    row.injected = True
    row.info.update(
        request_mb=round(size / MB, 1),
        attacks=len(statuses),
        statuses=sorted(set(statuses)),
        rounds=ROUNDS,
        p99_ms_unloaded=round(quiet, 2),
        p99_ms_during=round(under_attack, 2),
        p99_ratio=round(under_attack / quiet, 2) if quiet else None,
        small_requests_unloaded=len(samples["quiet"]),
        small_requests_during=len(samples["attack"]),
        rss_before_mb=round(before),
        rss_peak_mb=round(peak[0]),
        rss_after_mb=round(after),
    )
    row.checks["refused_with_" + expected.name.lower()] = set(statuses) == {expected.name}
    row.checks["no_small_request_failed"] = not failures
    row.checks["rss_growth_under_200mb"] = after - before < 200
    row.note = (
        f"{len(statuses)} x {size // MB} MB of tiny tensors back to back in {ROUNDS} windows of "
        f"{WINDOW_S:g} s, each after a quiet one as long, under a background of small requests"
    )


def _rounds(address: str, model: str, size: int, window: list[str | None]) -> list[str]:
    """Run the attacker process (see the module docstring) for ROUNDS rounds. Each round is a
    quiet window followed by an attack window of the same length (the first attack's length
    until one is measured), so the unloaded and the attacked p99 see the same machine, however
    busy it is meanwhile; `window[0]` says which one the background's samples belong to."""
    argv = [sys.executable, "-m", __name__, address, model, str(size)]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent(),
    )
    statuses: list[str] = []
    try:
        assert proc.stdin is not None and proc.stdout is not None
        ready = proc.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"the attacker process did not start: {ready!r}")
        length = WINDOW_S
        for _ in range(ROUNDS):
            window[0] = "quiet"
            time.sleep(length)  # the quiet window itself: the background measures meanwhile
            window[0] = "attack"
            started = time.monotonic()
            proc.stdin.write(f"{WINDOW_S}\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            length = time.monotonic() - started
            window[0] = None
            if not line:
                break
            statuses.extend(json.loads(line))
        proc.stdin.close()
        proc.wait(timeout=30)
    finally:
        window[0] = None
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    if proc.returncode != 0 or len(statuses) < ROUNDS:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"the attacker process failed: {err[-2000:]}")
    return statuses


def attack(address: str, model: str, size: int) -> None:
    """The attacker process: for each line from stdin (a number of seconds), send requests of
    tiny tensors, ~`size` bytes each, back to back for that long (at least one), and write the
    status of each as one JSON line; stop at end of input. It uses a connection of its own
    (sharing the small requests' HTTP/2 connection would measure the client's head-of-line
    blocking instead)."""
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
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while line := sys.stdin.readline():
            statuses: list[str] = []
            until = time.monotonic() + float(line)
            while not statuses or time.monotonic() < until:
                try:
                    raw(body, timeout=60)
                    statuses.append("OK")
                except grpc.RpcError as exc:
                    statuses.append(exc.code().name)  # type: ignore[attr-defined]
            sys.stdout.write(json.dumps(statuses) + "\n")
            sys.stdout.flush()
    finally:
        channel.close()


HOSTILE: dict[str, tuple[str, Any]] = {
    "oversized_request": ("60 MB ModelInfer of tiny tensors", oversized_request),
    "many_inputs": ("ModelInfer of ~700,000 input tensors", many_inputs),
}


if __name__ == "__main__":
    attack(sys.argv[1], sys.argv[2], int(sys.argv[3]))
