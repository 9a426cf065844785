"""Drive a V2 gRPC server with UNMODIFIED foreign clients (tritonclient's InferenceServerClient,
and the KServe SDK's InferenceGRPCClient when installed) and check every answer: a classifier's
`label` and `probabilities`, or a regressor's `prediction` (FP64 [N]), as its metadata declares.

Runs in the separate venv made by benchmarks/foreign_client/setup.sh (it must not import
driftloop: tritonclient registers the same `inference.*` protobuf names as driftloop does).

    .bench/foreign-client-venv/bin/python benchmarks/foreign_client/check.py \
        --url 127.0.0.1:8001 --model churn [--model other ...]

Prints one line per check and exits 0 when all passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

ROWS = 5
failures: list[str] = []


def check(name: str, condition: bool, detail: Any = "") -> None:
    print(f"{'ok  ' if condition else 'FAIL'} {name}" + (f": {detail}" if not condition else ""))
    if not condition:
        failures.append(name)


def feature_values(datatype: str, rows: int, column: int) -> np.ndarray:
    rng = np.random.default_rng(column)
    if datatype == "BYTES":
        return np.array([c.encode() for c in rng.choice(["red", "blue", "green"], rows)], object)
    return rng.normal(size=rows).astype(np.float64)


def as_text(values: np.ndarray) -> np.ndarray:
    """A column as BYTES elements (numbers written as decimal strings)."""
    if values.dtype == object:
        return values
    return np.array([repr(float(v)).encode() for v in values], dtype=object)


def check_triton(url: str, model: str) -> list[tuple[str, str]]:
    """Every tritonclient check; returns the model's (input name, datatype) from its metadata."""
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(url=url)
    check("tritonclient is_server_live", client.is_server_live())
    check("tritonclient is_server_ready", client.is_server_ready())
    server = client.get_server_metadata()
    check("tritonclient get_server_metadata", bool(server.name and server.version), server)
    check(f"tritonclient is_model_ready({model})", client.is_model_ready(model))
    meta = client.get_model_metadata(model)
    features = [(t.name, t.datatype) for t in meta.inputs]
    outputs = {t.name: list(t.shape) for t in meta.outputs}
    regressor = set(outputs) == {"prediction"}
    check(
        "tritonclient get_model_metadata inputs/outputs",
        bool(features) and (regressor or set(outputs) == {"label", "probabilities"}),
        meta,
    )
    width = outputs.get("probabilities", [-1, 0])[-1]
    columns = [feature_values(d, ROWS, j) for j, (_, d) in enumerate(features)]
    if regressor:
        check_triton_regressor(client, model, features, columns)
        client.close()
        return features

    # per-feature [N] inputs (raw contents: tritonclient's set_data_from_numpy), both outputs
    inputs = []
    for (name, datatype), values in zip(features, columns, strict=True):
        tensor = triton.InferInput(name, [ROWS], datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    wanted = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("probabilities")]
    result = client.infer(
        model, inputs, outputs=wanted, request_id="triton-1", parameters={"trace": "t-1"}
    )
    labels = result.as_numpy("label")
    proba = result.as_numpy("probabilities")
    response = result.get_response()
    check(
        "tritonclient infer per-feature: label [N]", labels is not None and labels.shape == (ROWS,)
    )
    check(
        "tritonclient infer per-feature: probabilities [N, C] summing to 1",
        proba is not None
        and proba.shape == (ROWS, width)
        and bool(np.allclose(proba.sum(axis=1), 1.0)),
        None if proba is None else proba.shape,
    )
    check("tritonclient infer: id echoed", response.id == "triton-1", response.id)
    check(
        "tritonclient infer: parameters echoed",
        response.parameters["trace"].string_param == "t-1",
        response.parameters,
    )

    # one [N, F] input: FP64 when every feature is numeric, else BYTES cells
    numeric = all(d != "BYTES" for _, d in features)
    if numeric:
        matrix = np.stack(columns, axis=1).astype(np.float64)
        tensor = triton.InferInput("input-0", list(matrix.shape), "FP64")
    else:
        matrix = np.stack([as_text(c) for c in columns], axis=1)
        tensor = triton.InferInput("input-0", list(matrix.shape), "BYTES")
    tensor.set_data_from_numpy(matrix)
    only = [triton.InferRequestedOutput("label")]
    result = client.infer(model, [tensor], outputs=only)
    kind = "FP64" if numeric else "BYTES"
    same = result.as_numpy("label")
    check(
        f"tritonclient infer [N, F] {kind}: same labels as per-feature",
        same is not None and labels is not None and list(same) == list(labels),
        (same, labels),
    )
    check(
        "tritonclient infer: only the requested output",
        result.as_numpy("probabilities") is None,
    )

    # every feature as BYTES text, per feature
    inputs = []
    for (name, _), values in zip(features, columns, strict=True):
        tensor = triton.InferInput(name, [ROWS, 1], "BYTES")
        tensor.set_data_from_numpy(as_text(values).reshape(ROWS, 1))
        inputs.append(tensor)
    result = client.infer(model, inputs)
    text_labels = result.as_numpy("label")
    check(
        "tritonclient infer per-feature BYTES [N, 1]: same labels",
        text_labels is not None and labels is not None and list(text_labels) == list(labels),
        text_labels,
    )

    expect_status(
        "tritonclient infer unknown model -> NOT_FOUND",
        lambda: client.infer("no-such-model", inputs),
        "NOT_FOUND",
    )
    bad = triton.InferInput(features[0][0], [ROWS + 1], "FP64")
    bad.set_data_from_numpy(np.zeros(ROWS + 1))
    expect_status(
        "tritonclient infer wrong inputs -> INVALID_ARGUMENT",
        lambda: client.infer(model, [bad]),
        "INVALID_ARGUMENT",
    )
    client.close()
    return features


def check_triton_regressor(
    client: Any, model: str, features: list[tuple[str, str]], columns: list[np.ndarray]
) -> None:
    """A regressor answers `prediction`, FP64 [N], the same numbers for every request style."""
    import tritonclient.grpc as triton

    def infer(inputs: list[Any], outputs: list[Any] | None = None) -> Any:
        return client.infer(model, inputs, outputs=outputs)

    inputs = []
    for (name, datatype), values in zip(features, columns, strict=True):
        tensor = triton.InferInput(name, [ROWS], datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    result = infer(inputs, [triton.InferRequestedOutput("prediction")])
    numbers = result.as_numpy("prediction")
    check(
        "tritonclient infer per-feature: prediction FP64 [N]",
        numbers is not None
        and numbers.dtype == np.float64
        and numbers.shape == (ROWS,)
        and bool(np.isfinite(numbers).all())
        and result.get_output("prediction").datatype == "FP64",
        None if numbers is None else (numbers.dtype, numbers.shape),
    )
    numeric = all(d != "BYTES" for _, d in features)
    if numeric:
        matrix = np.stack(columns, axis=1).astype(np.float64)
        tensor = triton.InferInput("input-0", list(matrix.shape), "FP64")
    else:
        matrix = np.stack([as_text(c) for c in columns], axis=1)
        tensor = triton.InferInput("input-0", list(matrix.shape), "BYTES")
    tensor.set_data_from_numpy(matrix)
    same = infer([tensor]).as_numpy("prediction")
    check(
        f"tritonclient infer [N, F] {'FP64' if numeric else 'BYTES'}: same prediction",
        same is not None and numbers is not None and bool(np.array_equal(same, numbers)),
        (same, numbers),
    )
    text = []
    for (name, _), values in zip(features, columns, strict=True):
        tensor = triton.InferInput(name, [ROWS, 1], "BYTES")
        tensor.set_data_from_numpy(as_text(values).reshape(ROWS, 1))
        text.append(tensor)
    again = infer(text).as_numpy("prediction")
    check(
        "tritonclient infer per-feature BYTES [N, 1]: same prediction",
        again is not None and numbers is not None and bool(np.array_equal(again, numbers)),
        again,
    )
    expect_status(
        "tritonclient infer a classifier's output from a regressor -> INVALID_ARGUMENT",
        lambda: infer(inputs, [triton.InferRequestedOutput("label")]),
        "INVALID_ARGUMENT",
    )


def expect_status(name: str, call: Callable[[], Any], status: str) -> None:
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as exc:
        check(name, status in str(exc.status()), exc)
        return
    check(name, False, "no error raised")


def check_kserve(url: str, model: str, features: list[tuple[str, str]]) -> None:
    """The KServe SDK's gRPC client (it has no metadata call: the features come from the
    tritonclient run)."""
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def run() -> None:
        client = InferenceGRPCClient(url=url, timeout=30)
        try:
            check("kserve is_server_live", await client.is_server_live())
            check("kserve is_server_ready", await client.is_server_ready())
            check(f"kserve is_model_ready({model})", await client.is_model_ready(model))
            inputs = []
            for j, (name, datatype) in enumerate(features):
                tensor = InferInput(name, [ROWS], datatype)
                tensor.set_data_from_numpy(feature_values(datatype, ROWS, j), binary_data=True)
                inputs.append(tensor)
            request = InferRequest(model_name=model, infer_inputs=inputs, request_id="kserve-1")
            response = await client.infer(request)
            by_name = {o.name: o for o in response.outputs}
            if "prediction" in by_name:  # a regressor
                numbers = by_name["prediction"].as_numpy()
                check(
                    "kserve infer: prediction FP64 [N]",
                    numbers.shape == (ROWS,) and numbers.dtype == np.float64,
                    (numbers.dtype, numbers.shape),
                )
            else:
                labels = by_name["label"].as_numpy()
                proba = by_name["probabilities"].as_numpy()
                check("kserve infer: label [N]", labels.shape == (ROWS,), labels.shape)
                check(
                    "kserve infer: probabilities sum to 1",
                    proba.shape[0] == ROWS and bool(np.allclose(proba.sum(axis=1), 1.0)),
                    proba,
                )
            check("kserve infer: id echoed", response.id == "kserve-1", response.id)
        finally:
            await client.close()

    asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="host:port of the V2 gRPC server")
    parser.add_argument("--model", action="append", required=True, help="model to check")
    parser.add_argument(
        "--client",
        choices=["all", "kserve"],
        default="all",
        help="all: tritonclient here, then the KServe SDK (if installed) in a child process",
    )
    parser.add_argument("--features", default="{}", help=argparse.SUPPRESS)  # kserve child
    args = parser.parse_args()
    features: dict[str, list[tuple[str, str]]] = json.loads(args.features)
    for model in args.model:
        try:
            if args.client == "kserve":
                check_kserve(args.url, model, features[model])
            else:
                features[model] = check_triton(args.url, model)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next model
            check(f"{args.client} {model}: unexpected {type(exc).__name__}", False, exc)
    if args.client == "all":
        check_kserve_apart(args.url, features)
    print(f"{'FAILED' if failures else 'PASSED'}: {len(failures)} failed check(s)")
    return 1 if failures else 0


def check_kserve_apart(url: str, features: dict[str, list[tuple[str, str]]]) -> None:
    """The KServe SDK in its own process: it registers the same `inference.*` protobuf names
    as tritonclient, and one process cannot hold both."""
    if importlib.util.find_spec("kserve") is None:
        print("skip kserve: the KServe SDK is not installed in this venv (WITH_KSERVE=1 setup.sh)")
        return
    argv = [sys.executable, __file__, "--url", url, "--client", "kserve"]
    argv += ["--features", json.dumps(features)]
    for model in features:
        argv += ["--model", model]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in done.stdout.splitlines() if not line.startswith(("PASSED", "FAILED"))]
    print("\n".join(lines))
    check("kserve checks", done.returncode == 0, done.stderr[-2000:] or "see above")


if __name__ == "__main__":
    sys.exit(main())
