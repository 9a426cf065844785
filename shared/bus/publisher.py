"""The event publisher: envelopes (and raw bytes) to Kafka on behalf of one service, acks="all",
idempotent where the broker allows; a send that fails raises Unavailable, so the caller does not
acknowledge what it consumed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from google.protobuf.message import Message
from prometheus_client import Histogram

from driftloop.shared.bus import connection, envelope
from driftloop.shared.bus.connection import KafkaTarget
from driftloop.shared.bus.topics import MAX_MESSAGE_BYTES
from driftloop.shared.errors import Unavailable

LOOP_STAGE_SECONDS = Histogram(
    "driftloop_loop_stage_seconds",
    "Seconds from a cause event to the event it caused (e.g. ModelPromoted -> ModelDeployed)",
    ["cause", "effect"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)


class EventPublisher:
    """Publishes envelopes (and raw bytes) to Kafka on behalf of one service."""

    def __init__(
        self, bootstrap: KafkaTarget, producer_name: str, *, max_batch_bytes: int = 16384
    ) -> None:
        """`bootstrap`: the broker, as CommonSettings.kafka_connection() (address, TLS, SASL,
        idempotence) or a bare address. `max_batch_bytes`: data buffered per partition before
        send() waits for the batch to be drained (aiokafka's max_batch_size). A message larger
        than it travels alone and the next send to that partition waits a round trip, so
        publishers of large messages (record batches) raise it to pipeline several per
        request."""
        self.producer_name = producer_name
        self._kafka = connection.resolve(bootstrap)
        self._options = {
            "client_id": f"driftloop-{producer_name}",
            "linger_ms": 2,
            "max_request_size": MAX_MESSAGE_BYTES,
            "max_batch_size": max_batch_bytes,
            "acks": "all",
        }
        self._started: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect; raises Unavailable (Unauthenticated for refused SASL credentials)."""
        self._started = await connection.start_producer(self._kafka, **self._options)

    async def stop(self) -> None:
        if self._started is not None:
            await self._started.stop()

    @property
    def idempotent(self) -> bool:
        """Whether the broker gave this publisher's producer an id (no duplicates on retry)."""
        return self._started is not None and connection.is_idempotent(self._started)

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._started is None:
            raise Unavailable(f"publisher {self.producer_name} is not started")
        return self._started

    def event(
        self,
        payload: Message,
        *,
        cause: envelope.Envelope | None = None,
        correlation_id: str = "",
        causation_id: str = "",
    ) -> envelope.Envelope:
        made = envelope.new_event(
            self.producer_name,
            payload,
            cause=cause,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        if cause is not None and cause.HasField("occurred_at"):
            waited = made.occurred_at.ToNanoseconds() - cause.occurred_at.ToNanoseconds()
            LOOP_STAGE_SECONDS.labels(cause.type, made.type).observe(max(0.0, waited / 1e9))
        return made

    async def publish(self, topic: str, key: str, event: envelope.Envelope) -> None:
        await self.publish_raw(topic, key.encode(), envelope.encode(event))

    async def enqueue(self, topic: str, key: str, event: envelope.Envelope) -> asyncio.Task[None]:
        """Hand an event to the producer without waiting for the broker's ack, so a caller can
        pipeline many sends; await the returned task to know it was written (it raises
        Unavailable when it was not). The producer's own buffer bounds how much can queue."""
        try:
            future = await self._producer.send(topic, envelope.encode(event), key=key.encode())
        except KafkaError as exc:
            raise Unavailable(f"cannot publish to {topic}: {exc}") from exc
        return asyncio.ensure_future(self._acked(topic, future))

    @staticmethod
    async def _acked(topic: str, future: Awaitable[object]) -> None:
        try:
            await future
        except KafkaError as exc:
            raise Unavailable(f"cannot publish to {topic}: {exc}") from exc

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        try:
            await self._producer.send_and_wait(topic, value, key=key)
        except KafkaError as exc:
            raise Unavailable(f"cannot publish to {topic}: {exc}") from exc
