"""The V2 gRPC load client of `driftloop bench serving`, run as its own process so its CPU does
not share the server's GIL: `python -m driftloop.shared.cli.bench.serving_load SPEC_JSON`.

It sends one pre-serialized ModelInfer request (typed contents, FP32 or FP64, one [N, F] tensor
named input-0 as tritonclient sends it, or one [N] tensor per feature) from `concurrency`
coroutines over one channel (or `connections`), and prints one JSON object: counts, latency
percentiles and, with `trace`, a per-request trace file (start time, latency, ok, answering
version) for swap analysis.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb

INFER = "/inference.GRPCInferenceService/ModelInfer"
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class LoadSpec:
    target: str
    """host:port of a V2 gRPC server."""
    model: str
    features: int
    rows: int
    concurrency: int
    seconds: float
    """Measured time; requests started before `warmup_s` are not counted."""
    warmup_s: float = 0.5
    trace: str = ""
    """When set, write a per-request trace (npz) there."""
    stop_file: str = ""
    """When set, stop as soon as this file exists (`seconds` is then an upper bound)."""
    seed: int = 0
    datatype: str = "FP64"
    """FP32 or FP64."""
    style: str = "tensor"
    """`tensor`: one [N, F] input named input-0; `features`: one [N] input per feature."""
    connections: int = 1
    """TCP connections (channels) the coroutines share round-robin; serving's workers share
    its port per connection, so loading several workers needs several connections."""


STYLES = ("tensor", "features")
CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}


def infer_request(
    model: str,
    rows: int,
    features: int,
    seed: int = 0,
    *,
    datatype: str = "FP64",
    style: str = "tensor",
) -> pb.ModelInferRequest:
    """A request for `rows` rows of `features` values, typed contents, all outputs: one
    [rows, features] input in feature order (`tensor`), or one [rows] input per feature named
    f0, f1, ... (`features`; with MLServer's `content_type: pd` request parameter, which makes
    MLServer build a DataFrame of them and driftloop ignores)."""
    if datatype not in CONTENTS or style not in STYLES:
        raise ValueError(f"datatype {datatype!r} / style {style!r}: use {CONTENTS} / {STYLES}")
    values = np.random.default_rng(seed).normal(size=(rows, features))
    request = pb.ModelInferRequest(model_name=model)
    if style == "tensor":
        tensor = request.inputs.add(name="input-0", datatype=datatype, shape=[rows, features])
        getattr(tensor.contents, CONTENTS[datatype]).extend(values.reshape(-1).tolist())
        return request
    request.parameters["content_type"].string_param = "pd"
    for j in range(features):
        tensor = request.inputs.add(name=f"f{j}", datatype=datatype, shape=[rows])
        getattr(tensor.contents, CONTENTS[datatype]).extend(values[:, j].tolist())
    return request


@dataclass
class _Trace:
    starts: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    """Every request sent, the warm-up's too."""


async def run(spec: LoadSpec) -> dict[str, Any]:
    payload = infer_request(
        spec.model, spec.rows, spec.features, spec.seed, datatype=spec.datatype, style=spec.style
    ).SerializeToString()
    trace = _Trace()
    options = list(_OPTIONS)
    if spec.connections > 1:
        options.append(("grpc.use_local_subchannel_pool", 1))  # a connection per channel
    channels = [
        grpc.aio.insecure_channel(spec.target, options=options)
        for _ in range(max(1, spec.connections))
    ]
    try:
        calls = [
            channel.unary_unary(
                INFER,
                request_serializer=None,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            for channel in channels
        ]
        for call in calls:
            await _first_call(call, payload)  # connect and check before timing anything
        began = time.perf_counter()
        window = _Window(began + spec.warmup_s, began + spec.warmup_s + spec.seconds)
        watcher = asyncio.create_task(_watch(spec.stop_file, window)) if spec.stop_file else None
        workers = [
            _worker(calls[i % len(calls)], payload, spec.rows, window, trace)
            for i in range(spec.concurrency)
        ]
        await asyncio.gather(*workers)
        if watcher is not None:
            watcher.cancel()
    finally:
        for channel in channels:
            await channel.close()
    return _summary(spec, trace, began, window)


async def _first_call(call: Any, payload: bytes, timeout: float = 30.0) -> None:
    """One request that must succeed; NOT_FOUND is retried for a while (a serving worker on
    another connection may load the model a moment after the one the bench waited on)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await call(payload, timeout=timeout)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)  # poll: the model is still loading on this worker


@dataclass
class _Window:
    measure_from: float
    stop_at: float


async def _watch(stop_file: str, window: _Window) -> None:
    path = Path(stop_file)
    while not path.exists():
        await asyncio.sleep(0.05)  # poll: the parent creates the file when it is done
    window.stop_at = min(window.stop_at, time.perf_counter())


async def _worker(call: Any, payload: bytes, rows: int, window: _Window, trace: _Trace) -> None:
    measure_from = window.measure_from
    while True:
        started = time.perf_counter()
        if started >= window.stop_at:
            return
        version = ""
        trace.sent += 1
        try:
            reply = await call(payload, timeout=30)
            ok = len(reply.outputs) > 0 and _rows_answered(reply) == rows
            version = reply.model_version
            if not ok:
                trace.errors["wrong_output_length"] += 1
        except grpc.aio.AioRpcError as exc:
            ok = False
            trace.errors[exc.code().name] += 1
        if started >= measure_from:
            trace.starts.append(started)
            trace.latencies.append(time.perf_counter() - started)
            trace.ok.append(ok)
            trace.versions.append(version)


def _rows_answered(reply: pb.ModelInferResponse) -> int:
    first = reply.outputs[0]
    return int(first.shape[0]) if first.shape else 0


def _summary(spec: LoadSpec, trace: _Trace, began: float, window: _Window) -> dict[str, Any]:
    seconds = max(1e-9, window.stop_at - window.measure_from)
    latencies = np.asarray(trace.latencies, dtype=np.float64) * 1000.0
    ok = np.asarray(trace.ok, dtype=bool)
    done = int(ok.sum())
    failed = int(len(ok) - done)
    p50, p90, p99 = np.percentile(latencies[ok], [50, 90, 99]).tolist() if done else [0.0, 0.0, 0.0]
    if spec.trace:
        np.savez(
            spec.trace,
            starts=np.asarray(trace.starts) - began,
            latencies_ms=latencies,
            ok=ok,
            versions=np.asarray(trace.versions, dtype=str),
        )
    return {
        "concurrency": spec.concurrency,
        "rows": spec.rows,
        "datatype": spec.datatype,
        "style": spec.style,
        "seconds": seconds,
        "requests": done,
        "all_requests": trace.sent,
        "failed": failed,
        "errors": dict(trace.errors),
        "rps": done / seconds,
        "rows_per_s": done * spec.rows / seconds,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": float(latencies.max()) if len(latencies) else 0.0,
        "wall_start": time.time() - (time.perf_counter() - began),
    }


def main() -> None:
    spec = LoadSpec(**json.loads(sys.argv[1]))
    print(json.dumps(asyncio.run(run(spec))))  # noqa: T201 - the parent reads this line


if __name__ == "__main__":
    main()
