"""The event envelope: causality is inherited, and any bytes decode or fail cleanly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import envelope
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit


def test_a_caused_event_inherits_the_correlation_id() -> None:
    drift = envelope.new_event("monitoring", events_pb2.DriftDetected(model="m"))
    assert drift.correlation_id == drift.event_id
    promoted = envelope.new_event("registry", events_pb2.ModelPromoted(model="m"), cause=drift)
    deployed = envelope.new_event("serving", events_pb2.ModelDeployed(model="m"), cause=promoted)
    assert deployed.correlation_id == drift.event_id
    assert deployed.causation_id == promoted.event_id
    assert deployed.type == "ModelDeployed" and deployed.WhichOneof("payload") == "model_deployed"


def test_round_trip() -> None:
    event = envelope.new_event("x", events_pb2.ModelRejected(model="m", reason="worse"))
    decoded = envelope.decode(envelope.encode(event))
    assert decoded == event
    assert envelope.payload(decoded).reason == "worse"


def test_non_payload_messages_are_refused() -> None:
    with pytest.raises(TypeError):
        envelope.new_event("x", events_pb2.Envelope())


@pytest.mark.parametrize("data", [b"", b"\xff\xff\xff", None])
def test_garbage_is_invalid_input(data: bytes | None) -> None:
    with pytest.raises(InvalidInput):
        envelope.decode(data)


def test_type_must_match_payload() -> None:
    event = envelope.new_event("x", events_pb2.ModelRejected(model="m"))
    event.type = "ModelPromoted"
    with pytest.raises(InvalidInput, match="does not match"):
        envelope.decode(envelope.encode(event))


@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_invalid_input(data: bytes) -> None:
    try:
        event = envelope.decode(data)
    except InvalidInput:
        return
    assert event.event_id and event.WhichOneof("payload")
