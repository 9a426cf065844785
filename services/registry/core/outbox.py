"""The registry's transactional outbox: domain events written in their decision's transaction
(as JSON), read back in order for the publisher, which encodes and sends them."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass

from driftloop.services.registry.core.events import EVENT_TYPES, RegistryEvent
from driftloop.shared.errors import DriftloopError

EVENT_JSON = "event-json"
"""Row format: `payload` is a RegistryEvent as JSON text; the publisher picks the topic."""
LEGACY_ENVELOPE = "envelope"
"""Row format of rows written before migration 4: `payload` is an encoded protobuf Envelope and
`topic` its topic (the column's default, so rows an older registry left unsent keep it)."""


@dataclass(frozen=True)
class LegacyEnvelope:
    """An outbox row an older registry wrote: the bytes to publish unchanged, and their topic."""

    topic: str
    data: bytes


@dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: str
    key: str
    """The Kafka key: the model name, so one model's events stay in order."""
    payload: RegistryEvent | LegacyEnvelope


class Outbox:
    """The outbox table's SQL, inside the caller's open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def add(self, event: RegistryEvent) -> None:
        # topic '': the adapter routes domain events; the column stays for legacy rows.
        # The payload is stored as TEXT (not bytes) so an operator can read it with sqlite3.
        self._c.execute(
            "INSERT INTO outbox (event_id, topic, key, payload, format) VALUES (?,?,?,?,?)",
            (event.event_id, "", event.payload.model, to_json(event), EVENT_JSON),
        )

    def unsent(self, limit: int = 100) -> list[OutboxRow]:
        """The oldest unsent rows, in the order they were written."""
        rows = self._c.execute(
            "SELECT id, event_id, topic, key, payload, format FROM outbox WHERE sent = 0"
            " ORDER BY id LIMIT ?",
            (limit,),
        )
        return [OutboxRow(r["id"], r["event_id"], r["key"], _payload(r)) for r in rows]

    def mark_sent(self, outbox_id: int) -> None:
        self._c.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (outbox_id,))


def to_json(event: RegistryEvent) -> str:
    return json.dumps(
        {
            "type": event.type,
            "payload": asdict(event.payload),
            "event_id": event.event_id,
            "correlation_id": event.correlation_id,
            "causation_id": event.causation_id,
            "occurred_at_ns": event.occurred_at_ns,
        },
        sort_keys=True,
    )


def from_json(text: str | bytes) -> RegistryEvent:
    doc = json.loads(text)
    cls = EVENT_TYPES.get(doc["type"])
    if cls is None:
        raise DriftloopError(
            f"outbox event type {doc['type']!r} is unknown to this registry (written by a "
            f"newer one?); known: {sorted(EVENT_TYPES)}"
        )
    return RegistryEvent(
        payload=cls(**doc["payload"]),
        event_id=doc["event_id"],
        correlation_id=doc["correlation_id"],
        causation_id=doc["causation_id"],
        occurred_at_ns=doc["occurred_at_ns"],
    )


def _payload(row: sqlite3.Row) -> RegistryEvent | LegacyEnvelope:
    if row["format"] == EVENT_JSON:
        return from_json(row["payload"])
    if row["format"] == LEGACY_ENVELOPE:
        return LegacyEnvelope(row["topic"], bytes(row["payload"]))
    raise DriftloopError(
        f"outbox row {row['id']} has format {row['format']!r}, unknown to this registry "
        f"(written by a newer one?); known: {[EVENT_JSON, LEGACY_ENVELOPE]}"
    )
