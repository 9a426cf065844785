"""The registry's outbox on a real SQLite file: domain events stored as JSON and read back in
order, rows an older registry wrote (encoded envelopes) published byte for byte after an upgrade."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from registry_event_samples import PAYLOADS

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.registry.adapters import pb
from driftloop.services.registry.adapters.kafka import OutboxPublisher
from driftloop.services.registry.core import events
from driftloop.services.registry.core.migrations import MIGRATIONS
from driftloop.services.registry.core.outbox import LegacyEnvelope
from driftloop.services.registry.core.store import RegistryStore
from driftloop.shared.bus import envelope, topics
from driftloop.shared.errors import DriftloopError

pytestmark = pytest.mark.unit


class RecordingPublisher:
    """Stands in for EventPublisher: keeps every (topic, key, value) handed to publish_raw."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    s = RegistryStore(tmp_path / "registry.db")
    yield s
    s.close()


def test_every_event_type_is_stored_as_json_and_read_back_in_order(store: RegistryStore) -> None:
    written = [events.new_event(p, correlation_id=f"c{i}") for i, p in enumerate(PAYLOADS)]
    with store.transaction() as tx:
        for event in written:
            tx.outbox.add(event)
    with store.transaction() as tx:
        rows = tx.outbox.unsent()
    assert [row.payload for row in rows] == written
    assert [(row.event_id, row.key) for row in rows] == [(e.event_id, "churn") for e in written]
    raw = store._conn.execute("SELECT format, topic, payload FROM outbox ORDER BY id").fetchall()
    assert {(r["format"], r["topic"]) for r in raw} == {("event-json", "")}
    assert [json.loads(r["payload"])["type"] for r in raw] == [e.type for e in written]


def test_a_rolled_back_transaction_leaves_no_outbox_row(store: RegistryStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.outbox.add(events.new_event(PAYLOADS[0]))
        raise RuntimeError("the decision failed")
    with store.transaction() as tx:
        assert tx.outbox.unsent() == []


def old_registry_database(path: Path) -> list[bytes]:
    """A schema-3 database (before domain events) with two unsent rows as the old registry
    wrote them: encoded envelopes; returns their bytes."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:3]:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    old = [
        envelope.new_event(
            "registry",
            events_pb2.ModelRegistered(model="churn", version="1", run_id="r1"),
            correlation_id="corr-r1",
            causation_id="drift-r1",
        ),
        envelope.new_event(
            "registry",
            events_pb2.ModelPromoted(model="churn", version="1", action="promote", reason="ok"),
        ),
    ]
    for event in old:
        conn.execute(
            "INSERT INTO outbox (event_id, topic, key, payload) VALUES (?,?,?,?)",
            (event.event_id, topics.MODELS, "churn", envelope.encode(event)),
        )
    conn.commit()
    conn.close()
    return [envelope.encode(e) for e in old]


async def test_rows_an_older_registry_left_unsent_go_out_unchanged_then_the_new_ones(
    tmp_path: Path,
) -> None:
    old = old_registry_database(tmp_path / "registry.db")
    store = RegistryStore(tmp_path / "registry.db")
    try:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        new = events.new_event(PAYLOADS[-1], correlation_id="corr-r2", causation_id="drift-r2")
        with store.transaction() as tx:
            tx.outbox.add(new)
            kinds = [type(row.payload) for row in tx.outbox.unsent()]
        assert kinds == [LegacyEnvelope, LegacyEnvelope, events.RegistryEvent]
        bus = RecordingPublisher()
        outbox = OutboxPublisher(store, bus)  # type: ignore[arg-type]
        assert await outbox.publish_pending() == 3
        assert await outbox.publish_pending() == 0  # every row is marked sent
    finally:
        store.close()
    assert bus.sent[:2] == [(topics.MODELS, b"churn", data) for data in old]
    topic, key, value = bus.sent[2]
    assert (topic, key) == (topics.MODELS, b"churn")
    assert envelope.decode(value) == pb.event_to_pb(new)


async def test_the_publisher_sends_the_registrys_decisions_in_the_order_they_were_made(
    store: RegistryStore,
) -> None:
    written = [events.new_event(p) for p in PAYLOADS]
    for event in written:
        with store.transaction() as tx:
            tx.outbox.add(event)
    bus = RecordingPublisher()
    assert await OutboxPublisher(store, bus).publish_pending() == len(PAYLOADS)  # type: ignore[arg-type]
    sent = [envelope.decode(value) for _, _, value in bus.sent]
    assert [pb.event_from_pb(env) for env in sent] == written
    assert {(topic, key) for topic, key, _ in bus.sent} == {(topics.MODELS, b"churn")}


def test_a_row_in_an_unknown_format_is_refused_by_name(store: RegistryStore) -> None:
    store._conn.execute(
        "INSERT INTO outbox (event_id, topic, key, payload, format)"
        " VALUES ('e1', '', 'churn', '{}', 'event-json-v9')"
    )
    with pytest.raises(DriftloopError, match="format 'event-json-v9'"), store.transaction() as tx:
        tx.outbox.unsent()
