"""Random and adversarial bytes at every gRPC method of every real service (the embedded stack):
each call ends in a status within its deadline, none in INTERNAL/UNKNOWN (a crash) when the
bytes are a valid request, and every service is still healthy afterwards."""

from __future__ import annotations

import random
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2
from driftloop.protos.ingestion.v1 import ingestion_pb2
from driftloop.protos.monitoring.v1 import monitoring_pb2
from driftloop.protos.registry.v1 import registry_pb2
from driftloop.protos.training.v1 import training_pb2
from driftloop.protos.validation.v1 import validation_pb2
from driftloop.services.ingestion.adapters.grpc import IngestionServicer
from driftloop.services.monitoring.adapters.grpc import MonitoringServicer
from driftloop.services.registry.adapters.grpc import RegistryServicer
from driftloop.services.serving.adapters.grpc import InferenceServicer
from driftloop.services.training.adapters.grpc import TrainingServicer
from driftloop.services.validation.adapters.grpc import ValidationServicer
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.settings import SERVICES, CommonSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MODULES = {
    "ingestion": (ingestion_pb2, IngestionServicer),
    "validation": (validation_pb2, ValidationServicer),
    "training": (training_pb2, TrainingServicer),
    "registry": (registry_pb2, RegistryServicer),
    "serving": (grpc_predict_v2_pb2, InferenceServicer),
    "monitoring": (monitoring_pb2, MonitoringServicer),
}
"""Each service's messages and its servicer (methods it does not define yet are skipped)."""
ADVERSARIAL = ["", "m", "../../etc/passwd", "a" * 300, "ß\u202e\x00", "chaos-1", "1", "-1"]
CALLS_PER_METHOD = 12
CRASH = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def _adversarial(cls: type[Message], rng: random.Random, depth: int = 0) -> Message:
    """A request whose every field holds a hostile or random value."""
    msg = cls()
    for field in cls.DESCRIPTOR.fields:
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth < 2 and not field.message_type.GetOptions().map_entry:
                sub = GetMessageClass(field.message_type)
                value = _adversarial(sub, rng, depth + 1)
                (getattr(msg, field.name).add() if repeated else getattr(msg, field.name)).CopyFrom(
                    value
                )
            continue
        value = _scalar(field, rng)
        if value is None:
            continue
        if repeated:
            getattr(msg, field.name).extend([value] * rng.randint(0, 3))
        else:
            setattr(msg, field.name, value)
    return msg


def _scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return rng.choice(ADVERSARIAL)
    if t == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.randint(0, 64))
    if t == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice([0.0, -1.0, 1e308, float("nan"), float("inf")])
    if t == FieldDescriptor.TYPE_ENUM:
        return None
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64):
        return rng.choice([0, 1, 2**31])
    return rng.choice([0, -1, 1, 2**31 - 1])


def _payloads(cls: type[Message], rng: random.Random) -> list[tuple[bytes, bool]]:
    """(bytes, parses-as-the-request) pairs: random bytes and adversarial requests."""
    out = []
    for i in range(CALLS_PER_METHOD):
        data = (
            rng.randbytes(rng.randint(0, 200))
            if i % 2
            else _adversarial(cls, rng).SerializeToString()
        )
        try:
            cls().ParseFromString(data)
            parses = True
        except DecodeError:
            parses = False
        out.append((data, parses))
    return out


def test_every_method_of_every_service_answers_random_bytes_with_a_status(
    running_stack: CommonSettings,
) -> None:
    rng = random.Random(9)
    crashes: list[str] = []
    calls = 0
    for service, (module, servicer) in MODULES.items():
        with grpc.insecure_channel(running_stack.address(service)) as channel:
            for svc in module.DESCRIPTOR.services_by_name.values():
                for method in svc.methods:
                    if method.server_streaming or method.name not in vars(servicer):
                        continue
                    path = f"/{svc.full_name}/{method.name}"
                    cls = GetMessageClass(method.input_type)
                    for data, parses in _payloads(cls, rng):
                        code = _call(channel, path, data, method.client_streaming)
                        calls += 1
                        if code in CRASH and parses:
                            crashes.append(f"{path} -> {code.name} on {data[:60]!r}")
    assert calls > 200
    assert crashes == [], "\n".join(crashes)
    unhealthy = [s for s in SERVICES if stack.health_of(running_stack, s) != "SERVING"]
    assert unhealthy == []


def _call(channel: grpc.Channel, path: str, data: bytes, streaming: bool) -> grpc.StatusCode:
    try:
        if streaming:
            channel.stream_unary(path)(iter([data, data]), timeout=15)
        else:
            channel.unary_unary(path)(data, timeout=15)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{path} hung on {data[:60]!r}"
        return code
    return grpc.StatusCode.OK
