"""The outbox publisher: sends committed registry events to Kafka, in order, at least once.

Events are written to the outbox table in the same transaction as the decision they announce,
so a broker that is down at commit time only delays them. Each is encoded here (adapters/pb.py).
"""

from __future__ import annotations

import asyncio

import structlog

from driftloop.services.registry.adapters import pb
from driftloop.services.registry.core.outbox import LegacyEnvelope, OutboxRow
from driftloop.services.registry.core.store import RegistryStore
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.errors import Unavailable

log = structlog.get_logger(__name__)


class OutboxPublisher:
    """`run()` is the background task; `notify()` (thread-safe) wakes it after a commit."""

    def __init__(
        self,
        store: RegistryStore,
        publisher: EventPublisher,
        *,
        poll_seconds: float = 0.5,
        retry_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._poll = poll_seconds
        self._retry = retry_seconds
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                sent = await self.publish_pending()
            except Unavailable as exc:
                log.warning("outbox_publish_retry", error=str(exc))
                await asyncio.sleep(self._retry)  # back off: the broker is unreachable
                continue
            if sent:
                continue  # there may be more than one page
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll)
            except TimeoutError:
                pass  # poll: catches rows committed by another process or before start

    async def publish_pending(self) -> int:
        """Publish every unsent row in id order, marking each sent; return how many."""
        rows = await asyncio.to_thread(self._unsent)
        for row in rows:
            topic, value = _message(row)
            await self._publisher.publish_raw(topic, row.key.encode(), value)
            await asyncio.to_thread(self._mark_sent, row.id)
            log.debug("outbox_event_sent", event_id=row.event_id, topic=topic, model=row.key)
        return len(rows)

    def _unsent(self) -> list[OutboxRow]:
        with self._store.transaction() as tx:
            return tx.outbox.unsent()

    def _mark_sent(self, outbox_id: int) -> None:
        with self._store.transaction() as tx:
            tx.outbox.mark_sent(outbox_id)


def _message(row: OutboxRow) -> tuple[str, bytes]:
    """The topic and value of one row. A row an older registry wrote holds its encoded envelope:
    it goes out byte for byte as stored, so an upgrade with unsent rows loses nothing."""
    if isinstance(row.payload, LegacyEnvelope):
        return row.payload.topic, row.payload.data
    return topics.MODELS, envelope.encode(pb.event_to_pb(row.payload))
