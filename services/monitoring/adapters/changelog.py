"""The changelog of the predictions awaiting labels: what a restart (kill -9 included) restores.

One record per change of a request id's state on driftloop.monitoring.pending (compacted, so
the latest state per id is what the broker keeps): key `model NUL request_id`, value JSON
["p", version, prediction, logged_at] while it waits, ["j"] once its label joined (so a label
replayed after a restart is a duplicate, never counted twice), none (a tombstone) once it is
forgotten. Each record goes to the partition the model's predictions go to (the default
partitioner's murmur2 of the model name), so a model's state lives beside its input and,
with several instances, moves with it (adapters/moves.py reads only the partitions assigned).

Ordering gives at-least-once: the handler sends the changes of the messages one poll returned
(a fleet's many small logs share one round of acks) and the consumer commits the poll's offsets
only once the broker acknowledged them all. A kill -9 before the acks replays the messages,
whose changes are idempotent (same state per id).

Why not faust-streaming tables (named in the design card): faust-streaming 0.15.3 needs
click<8.4 and the pinned check-jsonschema==0.39.0 needs click>=8.5; pip's resolver finds no
set that holds both (ResolutionImpossible), so it cannot be installed beside the pins.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from driftloop.services.monitoring.core.performance import JOINED, PendingState
from driftloop.shared.bus import connection, topics
from driftloop.shared.bus.connection import KafkaTarget
from driftloop.shared.errors import Unavailable

log = structlog.get_logger(__name__)

TOPIC = topics.MONITORING_PENDING
SEP = b"\x00"


def encode(state: PendingState) -> bytes | None:
    if state is None:
        return None
    if state == JOINED:
        return b'["j"]'
    assert isinstance(state, tuple)
    return json.dumps(["p", *state]).encode()


def decode(value: bytes | None) -> PendingState:
    """A record's state; None for a tombstone (or a value this code does not read)."""
    if value is None:
        return None
    try:
        found = json.loads(value)
    except ValueError:
        return None
    if found == ["j"]:
        return JOINED
    if isinstance(found, list) and len(found) == 4 and found[0] == "p":
        return (str(found[1]), str(found[2]), float(found[3]))
    return None


def partition_of(model: str, partitions: int) -> int:
    """The partition aiokafka's default partitioner gives records keyed by `model`."""
    return (murmur2(model.encode()) & 0x7FFFFFFF) % partitions


class PendingChangelog:
    """Writes monitors' changes of predictions awaiting labels; reads them back at start."""

    def __init__(self, bootstrap: KafkaTarget, *, client_id: str = "driftloop-monitoring") -> None:
        self._kafka = connection.resolve(bootstrap)
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._partitions = 0
        self.written = 0

    async def start(self) -> None:
        self._producer = await connection.start_producer(
            self._kafka,
            client_id=self._client_id,
            linger_ms=5,
            max_batch_size=256 * 1024,
            acks="all",
        )
        found = await self._producer.partitions_for(TOPIC)
        self._partitions = len(found)

    @property
    def partitions(self) -> int:
        """The changelog's partition count (known once started)."""
        return self._partitions

    async def partitions_of(self, topic: str) -> int:
        """How many partitions `topic` has (the changelog must be started)."""
        if self._producer is None:
            raise Unavailable("the monitoring changelog is not started")
        try:
            return len(await self._producer.partitions_for(topic))
        except KafkaError as exc:
            raise Unavailable(f"cannot read the partitions of {topic}: {exc}") from exc

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def write(self, model: str, changes: list[tuple[str, PendingState]]) -> None:
        """Write the changes and wait until the broker has them all (raises Unavailable)."""
        acks = await self.send_many({model: changes})
        if acks is not None:
            await acks

    async def send_many(
        self, changes: dict[str, list[tuple[str, PendingState]]]
    ) -> Awaitable[None] | None:
        """Send several models' changes (a batch of logs touches many partitions); returns
        the awaitable of every ack (None when there was nothing to send), which raises
        Unavailable when the broker refused them."""
        if not any(changes.values()):
            return None
        if self._producer is None:
            raise Unavailable("the monitoring changelog is not started")
        try:
            sent = []
            for model, model_changes in changes.items():
                partition = partition_of(model, self._partitions)
                prefix = model.encode() + SEP
                for request_id, state in model_changes:
                    key = prefix + request_id.encode()
                    sent.append(
                        await self._producer.send(
                            TOPIC, encode(state), key=key, partition=partition
                        )
                    )
        except KafkaError as exc:
            raise Unavailable(f"cannot write the monitoring changelog: {exc}") from exc
        return self._acked(sent, sum(len(c) for c in changes.values()))

    async def _acked(self, sent: list[asyncio.Future[object]], count: int) -> None:
        try:
            await asyncio.gather(*sent)
        except KafkaError as exc:
            raise Unavailable(f"cannot write the monitoring changelog: {exc}") from exc
        self.written += count

    async def read(
        self, partitions: set[int] | None = None
    ) -> dict[str, list[tuple[str, PendingState]]]:
        """Every model's latest state per request id, oldest first, from the whole changelog
        or only these of its partitions (up to their end when reading began)."""
        consumer = connection.consumer(self._kafka, enable_auto_commit=False)
        await connection.start(consumer, self._kafka)
        latest: dict[bytes, bytes | None] = {}
        try:
            assigned = await topics.partitions(consumer, [TOPIC], kafka=self._kafka)
            if partitions is not None:
                assigned = [tp for tp in assigned if tp.partition in partitions]
                if not assigned:
                    return {}
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends = await consumer.end_offsets(assigned)
            left = {tp for tp in assigned if ends[tp] > await consumer.position(tp)}
            while left:
                batches = await consumer.getmany(*left, timeout_ms=500, max_records=10_000)
                for records in batches.values():
                    for record in records:
                        if record.key is not None:
                            latest.pop(record.key, None)  # re-insert: keeps the newest order
                            latest[record.key] = record.value
                left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
        finally:
            await consumer.stop()
        states: dict[str, list[tuple[str, PendingState]]] = {}
        for key, value in latest.items():
            model, _, request_id = key.partition(SEP)
            state = decode(value)
            if state is not None:
                states.setdefault(model.decode(), []).append((request_id.decode(), state))
        return states
