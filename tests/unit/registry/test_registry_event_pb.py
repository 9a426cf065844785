"""The registry's domain events and their envelopes (adapters/pb.py): every event type round
trips with its ids and time, carries exactly its message's fields, and keeps the chain rule."""

from __future__ import annotations

import uuid
from dataclasses import fields

import pytest
from registry_event_samples import PAYLOADS

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.registry.adapters import pb
from driftloop.services.registry.core import events
from driftloop.shared.bus import envelope
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit


def test_the_samples_cover_every_event_type() -> None:
    assert {type(p).__name__ for p in PAYLOADS} == set(events.EVENT_TYPES)


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_every_event_round_trips_through_its_envelope_with_its_ids(
    payload: events.ModelEvent,
) -> None:
    event = events.new_event(payload, correlation_id="drift-corr", causation_id="drift-1")
    env = envelope.decode(envelope.encode(pb.event_to_pb(event)))  # a valid wire envelope
    assert (env.type, env.producer) == (type(payload).__name__, "registry")
    assert (env.event_id, env.correlation_id, env.causation_id) == (
        event.event_id,
        "drift-corr",
        "drift-1",
    )
    assert env.occurred_at.ToNanoseconds() == event.occurred_at_ns
    assert pb.event_from_pb(env) == event


@pytest.mark.parametrize("name, cls", sorted(events.EVENT_TYPES.items()))
def test_each_event_carries_exactly_its_message_fields(name: str, cls: type) -> None:
    message = getattr(events_pb2, name)
    assert {f.name for f in fields(cls)} == set(message.DESCRIPTOR.fields_by_name)


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_the_envelope_is_the_one_the_shared_builder_makes(payload: events.ModelEvent) -> None:
    """What the registry sent before its events became domain types: envelope.new_event over
    the message; only the id and the time differ from one build to the next."""
    event = events.new_event(payload, correlation_id="corr", causation_id="cause")
    ours = pb.event_to_pb(event)
    message = getattr(ours, ours.WhichOneof("payload"))
    shared = envelope.new_event("registry", message, correlation_id="corr", causation_id="cause")
    shared.event_id = event.event_id
    shared.occurred_at.FromNanoseconds(event.occurred_at_ns)
    assert ours == shared


def test_an_event_without_a_chain_starts_its_own() -> None:
    """The envelope rule: the correlation id is the given one, else the event's own id."""
    alone = events.new_event(PAYLOADS[0])
    assert alone.correlation_id == alone.event_id and alone.causation_id == ""
    assert str(uuid.UUID(alone.event_id)) == alone.event_id
    chained = events.new_event(PAYLOADS[0], correlation_id="c", causation_id="e")
    assert (chained.correlation_id, chained.causation_id) == ("c", "e")
    assert events.new_event(PAYLOADS[0]).event_id != alone.event_id


def test_other_services_events_are_not_registry_events() -> None:
    drift = envelope.new_event("monitoring", events_pb2.DriftDetected(model="churn"))
    with pytest.raises(InvalidInput, match="not a registry event: type 'DriftDetected'"):
        pb.event_from_pb(drift)
