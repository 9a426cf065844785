"""The event envelope: build, encode and decode every internal Kafka event.

An event inherits its correlation id from the event that caused it, and names that event as
its causation, so `driftloop trace` can follow a chain end to end.
"""

from __future__ import annotations

import uuid

from google.protobuf.message import DecodeError, Message

from driftloop.protos.events.v1.events_pb2 import Envelope
from driftloop.shared.errors import InvalidInput

__all__ = ["Envelope", "decode", "encode", "new_event", "payload"]

# payload message name -> name of its field in the Envelope's `payload` oneof
_PAYLOAD_FIELD = {
    f.message_type.name: f.name for f in Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields
}


def new_event(
    producer: str,
    payload: Message,
    *,
    cause: Envelope | None = None,
    correlation_id: str = "",
    causation_id: str = "",
) -> Envelope:
    """Wrap `payload` in a fresh envelope.

    Args:
        producer: name of the producing service.
        payload: one of the payload messages of events.proto.
        cause: the event that caused this one; its correlation id is inherited.
        correlation_id: used when there is no `cause` (e.g. from a gRPC request); a new one
            is made when both are empty.
        causation_id: used when there is no `cause`.
    """
    type_name = payload.DESCRIPTOR.name
    field = _PAYLOAD_FIELD.get(type_name)
    if field is None:
        raise TypeError(f"{type_name} is not an Envelope payload")
    event_id = str(uuid.uuid4())
    if cause is not None:
        correlation_id = cause.correlation_id or cause.event_id
        causation_id = cause.event_id
    env = Envelope(
        event_id=event_id,
        type=type_name,
        producer=producer,
        correlation_id=correlation_id or event_id,
        causation_id=causation_id,
    )
    env.occurred_at.GetCurrentTime()
    getattr(env, field).CopyFrom(payload)
    return env


def encode(event: Envelope) -> bytes:
    return event.SerializeToString()


def decode(data: bytes | None) -> Envelope:
    """Parse an envelope, raising InvalidInput when the bytes are not a complete one."""
    if not data:
        raise InvalidInput("empty message: expected a driftloop Envelope")
    env = Envelope()
    try:
        env.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidInput(f"not a driftloop Envelope: {exc}") from exc
    if not env.event_id or not env.type or env.WhichOneof("payload") is None:
        raise InvalidInput("not a driftloop Envelope: event_id, type or payload missing")
    if env.type != getattr(env, env.WhichOneof("payload")).DESCRIPTOR.name:
        raise InvalidInput(f"envelope type {env.type!r} does not match its payload")
    return env


def payload(event: Envelope) -> Message:
    field = event.WhichOneof("payload")
    if field is None:
        raise InvalidInput("envelope has no payload")
    return getattr(event, field)
