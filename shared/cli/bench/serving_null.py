"""The floor of `driftloop bench serving --null`: a V2 gRPC server (grpc.aio, the default asyncio
loop) that parses each ModelInfer request and answers at once, with no model behind it.

Run as its own process: `python -m driftloop.shared.cli.bench.serving_null`; it binds a free port
on 127.0.0.1 and prints it on one line. Its answer has the shape of serving's (a BYTES `label`
[N] and an FP64 `probabilities` [N, 3]), so the client does the same work for both; the answer
for N rows is built once and reused, which makes this a floor for what gRPC, protobuf and the
client allow on the machine.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import Any

import grpc

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc

CLASSES = 3
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@functools.lru_cache(maxsize=64)
def _answer(model: str, rows: int) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model, model_version="1")
    label = response.outputs.add(name="label", datatype="BYTES", shape=[rows])
    label.contents.bytes_contents.extend([b"mid"] * rows)
    proba = response.outputs.add(name="probabilities", datatype="FP64", shape=[rows, CLASSES])
    proba.contents.fp64_contents.extend([1.0 / CLASSES] * (rows * CLASSES))
    return response


def rows_of(request: pb.ModelInferRequest) -> int:
    """Rows of a V2 request: the first dimension of its first input (0 without inputs)."""
    if not request.inputs or not request.inputs[0].shape:
        return 0
    return max(0, int(request.inputs[0].shape[0]))


class NullServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Ready at once, every model ready, every ModelInfer answered without looking further."""

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - generated
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802 - generated
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802 - generated
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(  # noqa: N802 - generated name
        self, request: pb.ModelInferRequest, context: Any
    ) -> Any:
        return _answer(request.model_name, min(rows_of(request), 100_000))


async def serve(port: int = 0) -> None:
    server = grpc.aio.server(options=_OPTIONS)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(NullServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    sys.stdout.write(f"{bound}\n")
    sys.stdout.flush()
    await server.wait_for_termination()


def main() -> None:
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))


if __name__ == "__main__":
    main()
