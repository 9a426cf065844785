"""The consumer loop: topics in, a handler per message or per poll, offsets committed after the
side effect, failures to driftloop.deadletter.

Delivery is at-least-once: a consumer commits a record's offset only after its handler returned
(or the record was dead-lettered), and skips event ids it has already handled. Handlers must
still be idempotent on their own durable state, because the seen-id memory dies with the process.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import structlog
from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from prometheus_client import Counter, Gauge

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import connection, envelope, topics
from driftloop.shared.bus.connection import KafkaTarget
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import MAX_MESSAGE_BYTES
from driftloop.shared.errors import Unavailable

log = structlog.get_logger(__name__)

EVENTS_HANDLED = Counter(
    "driftloop_events_handled_total", "Kafka messages handled", ["consumer", "topic"]
)
EVENTS_DEADLETTERED = Counter(
    "driftloop_events_deadlettered_total",
    "Kafka messages sent to the dead-letter topic",
    ["consumer", "topic"],
)
CONSUMER_LAG = Gauge(
    "driftloop_consumer_lag_messages",
    "Messages behind the partition's high watermark after the last handled batch",
    ["consumer", "topic", "partition"],
)
HANDLER_RETRIES = Counter(
    "driftloop_handler_retries_total",
    "Handler calls retried because a dependency (registry, store, broker) was unavailable",
    ["consumer", "topic"],
)
UNAVAILABLE_BUDGET_S = 120.0
"""How long a consumer retries a record whose handler raises Unavailable before it gives up
and stops (so the supervisor restarts the service). Below aiokafka's 300 s max poll interval,
so the consumer keeps its group membership while it waits."""

EventHandler = Callable[[envelope.Envelope], Awaitable[None]]
RecordHandler = Callable[[ConsumerRecord], Awaitable[None]]
T = TypeVar("T")
BatchHandler = Callable[[list[ConsumerRecord]], Awaitable[Awaitable[int | None] | None]]
"""May return an awaitable: the rest of its work (e.g. the broker's acks of what it published);
the consumer then goes on polling and commits the records once that is done (see EventConsumer).
If the awaitable returns an offset, that offset is committed instead of the poll's end."""
DrainHook = Callable[[bool], Awaitable[None]]
"""Lets a batch handler that holds records across polls complete its pending polls: called with
False before the consumer waits for them at `max_pending_polls` (it reads on afterwards, so the
held records must be let go, i.e. published), with True when it stops reading its partitions
(shutdown, rebalance): the handler may then complete its polls at what it has finished and drop
what it holds, which, uncommitted, is read again by whoever reads the partition next."""
CommitMetadata = Callable[[TopicPartition, int], str]
"""The metadata to commit with a partition's offset (Kafka keeps it beside the offset)."""
PartitionsHook = Callable[[list[TopicPartition]], Awaitable[None]]
"""Called with the partitions a group rebalance takes away (after what is done was committed)
or hands over (before any of their records is handled): a handler's state moves with them."""


class EventConsumer:
    """Reads topics and calls a handler per message; failures go to driftloop.deadletter.

    With `on_event`, each message is decoded into an Envelope for the handler and a message
    that does not decode is dead-lettered; with `on_record` the handler gets the raw record
    (for topics external producers write). With `on_batch` the handler gets all the records
    one poll returned for one partition, in order (to amortise work over many small messages);
    if it raises, each record is handed to it again alone, and a record that still fails is
    dead-lettered, so a batch handler must be idempotent per record. Offsets are committed
    after each partition's records, whichever handler is used. A batch handler may return an
    awaitable holding the rest of its work (typically the acks of what it published): the
    consumer then polls and handles the next records while that completes, and commits each
    poll's offsets only after its awaitable is done, in order (at most `max_pending_polls`
    polls are in flight, counting the one being handled; if one raises, the consumer stops
    with that error and nothing after it is committed). A handler that raises `Unavailable` (a
    dependency is down) is called again with backoff for up to `unavailable_budget_s`;
    meanwhile nothing is committed or dead-lettered, and the service stays up. `ready` is set
    once partitions are assigned and their start offsets resolved, so callers (and tests)
    wait for it.

    A batch handler that holds records across polls (to coalesce them) returns, per poll, an
    awaitable that completes once the poll's records are in its output and returns the offset
    to commit (at most the poll's end: where its output is complete). It then gives `on_drain`,
    which the consumer awaits whenever it is about to wait for its pending polls (at
    `max_pending_polls`, on shutdown, before a rebalance takes partitions away) so that held
    records are not waited for, and may ask `behind()` whether more records are already there.
    With `commit_metadata`, each commit carries the metadata it returns for the partition and
    offset; `mark()` commits the committed offset again with fresh metadata, and
    `committed_metadata()` reads it back (a handler records state a redelivery needs there).

    With group membership, `on_revoked` is awaited with the partitions a rebalance takes away
    once what was done is committed, `on_assigned` with those it hands over (aiokafka awaits
    both inside the rebalance; it logs, and does not raise, what they raise, so a hook must
    itself make sure that a failure is not forgotten); `assignors` replaces aiokafka's
    round-robin assignment (e.g. a RangePartitionAssignor gives one member the same partition
    numbers of every topic: co-partitioned topics stay together).
    """

    def __init__(
        self,
        *,
        bootstrap: KafkaTarget,
        group: str | None,
        topic_names: Iterable[str],
        publisher: EventPublisher,
        on_event: EventHandler | None = None,
        on_record: RecordHandler | None = None,
        on_batch: BatchHandler | None = None,
        group_membership: bool = False,
        from_latest: bool = False,
        max_records: int = 200,
        max_pending_polls: int = 2,
        fetch_max_wait_ms: int = 500,
        unavailable_budget_s: float = UNAVAILABLE_BUDGET_S,
        on_drain: DrainHook | None = None,
        commit_metadata: CommitMetadata | None = None,
        on_assigned: PartitionsHook | None = None,
        on_revoked: PartitionsHook | None = None,
        assignors: tuple[type[AbstractPartitionAssignor], ...] = (),
    ) -> None:
        if sum(h is not None for h in (on_event, on_record, on_batch)) != 1:
            raise TypeError("give exactly one of on_event, on_record or on_batch")
        self.group = group
        self.topics = list(topic_names)
        self._publisher = publisher
        self._on_event = on_event
        self._on_record = on_record
        self._on_batch = on_batch
        self._membership = group_membership and group is not None
        self._max_records = max_records
        if max_pending_polls < 1:
            raise ValueError(f"max_pending_polls must be at least 1, got {max_pending_polls}")
        self._max_pending_polls = max_pending_polls
        self._unavailable_budget_s = unavailable_budget_s
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._on_drain = on_drain
        self._commit_metadata = commit_metadata
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self._committed: dict[TopicPartition, int] = {}
        self._committing = asyncio.Lock()
        self._tails: collections.deque[tuple[TopicPartition, int, asyncio.Future[int | None]]] = (
            collections.deque()
        )
        self._settling = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self._kafka = connection.resolve(bootstrap)
        self._consumer = connection.consumer(
            self._kafka,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="latest" if from_latest else "earliest",
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
            fetch_max_wait_ms=fetch_max_wait_ms,
            **({"partition_assignment_strategy": assignors} if assignors else {}),
        )

    async def run(self) -> None:
        """Consume until stop() is called."""
        await connection.start(self._consumer, self._kafka)
        try:
            await self._assign()
            while not self._stopping.is_set():
                if not self.ready.is_set() and self._consumer.assignment():
                    # why: resolve start offsets first, so that a from_latest consumer that
                    # says it is ready really sees every message published after that.
                    for tp in self._consumer.assignment():
                        await self._consumer.position(tp)
                    self.ready.set()
                    log.info("consumer_ready", group=self.group, topics=self.topics)
                batches = await self._consumer.getmany(
                    timeout_ms=200, max_records=self._max_records
                )
                await self._settle_done()  # commits the polls whose tails are done
                for tp, polled in batches.items():
                    after = polled[-1].offset + 1
                    records = await self._within_limit(polled)
                    tail = None
                    if records and self._on_batch is not None:
                        tail = await self._handle_batch(records)
                    else:
                        for record in records:
                            await self._handle(record)
                    if tail is not None:
                        # why: the next poll is handled while this one's tail (acks) completes
                        self._tails.append((tp, after, asyncio.ensure_future(tail)))
                        if len(self._tails) >= self._max_pending_polls:
                            await self._drain(stopping=False)
                        while len(self._tails) >= self._max_pending_polls:
                            await self._settle_oldest()
                    else:
                        await self._settle_all(stopping=False)
                        await self._commit(tp, after)
            await self._settle_all(stopping=True)
        finally:
            for _, _, pending in self._tails:
                pending.cancel()  # only left when the loop failed: uncommitted, redelivered
            self._tails.clear()
            await self._consumer.stop()

    async def stop(self) -> None:
        self._stopping.set()

    async def _commit(self, tp: TopicPartition, next_offset: int) -> None:
        if self.group is not None:
            async with self._committing:  # why: commits in order, each with fresh metadata
                await self._commit_with_metadata(tp, next_offset)
        self._record_lag(tp, next_offset)

    async def _commit_with_metadata(self, tp: TopicPartition, next_offset: int) -> None:
        if self._commit_metadata is None:
            await self._consumer.commit({tp: next_offset})
        else:
            await self._consumer.commit({tp: (next_offset, self._commit_metadata(tp, next_offset))})
        self._committed[tp] = next_offset

    async def mark(self, topic: str, partition: int, start: int) -> None:
        """Commit the partition's last committed offset again (`start`, where its reading began,
        if nothing was committed since) with the `commit_metadata` of now: durable before what
        the metadata speaks of is done. Raises if the commit fails (e.g. a rebalance)."""
        if self.group is None:
            return
        tp = TopicPartition(topic, partition)
        async with self._committing:
            await self._commit_with_metadata(tp, self._committed.get(tp, start))

    async def committed_metadata(self, topic: str, partition: int) -> tuple[int, str] | None:
        """The committed offset of a partition and its metadata (None: nothing committed)."""
        if self.group is None:
            return None
        tp = TopicPartition(topic, partition)
        # why: aiokafka's public committed() drops the metadata the broker returns with it
        found = await self._consumer._coordinator.fetch_committed_offsets([tp])
        if tp not in found or found[tp].offset < 0:
            return None
        return found[tp].offset, found[tp].metadata or ""

    async def _settle_oldest(self) -> None:
        # why: a rebalance settles from aiokafka's coordinator task, beside the poll loop
        async with self._settling:
            if not self._tails:
                return
            tp, next_offset, pending = self._tails[0]
            done = await pending  # raises: the consumer stops before committing it
            self._tails.popleft()
            await self._commit(tp, next_offset if done is None else done)

    async def _settle_done(self) -> None:
        while self._tails and self._tails[0][2].done():
            await self._settle_oldest()

    async def _settle_all(self, *, stopping: bool) -> None:
        await self._drain(stopping=stopping)
        while self._tails:
            await self._settle_oldest()

    async def _drain(self, *, stopping: bool) -> None:
        if self._on_drain is not None and self._tails:
            await self._on_drain(stopping)

    async def behind(self, topic: str, partition: int) -> int:
        """Records of a partition after the consumer's position, as of its latest fetch (0 when
        unknown or not assigned): more that are already on the broker, unread."""
        tp = TopicPartition(topic, partition)
        end = self._consumer.highwater(tp)
        if end is None or tp not in self._consumer.assignment():
            return 0
        return max(0, end - await self._consumer.position(tp))

    def _record_lag(self, tp: TopicPartition, next_offset: int) -> None:
        end = self._consumer.highwater(tp)
        if end is not None:
            lag = max(0, end - next_offset)
            CONSUMER_LAG.labels(self.group or "ephemeral", tp.topic, str(tp.partition)).set(lag)

    async def _assign(self) -> None:
        if self._membership:
            self._consumer.subscribe(self.topics, listener=_SettleBeforeRebalance(self))
            return
        self._consumer.assign(
            await topics.partitions(self._consumer, self.topics, kafka=self._kafka)
        )

    async def _within_limit(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """The records no larger than MAX_MESSAGE_BYTES; larger ones are dead-lettered unread.
        why: a broker may take bigger messages than driftloop's limit (the embedded one has no
        setting for it), so the limit is enforced where messages are read."""
        kept = []
        for record in records:
            size = len(record.value or b"")
            if size <= MAX_MESSAGE_BYTES:
                kept.append(record)
                continue
            error = (
                f"TooLarge: message is {size} bytes; driftloop takes at most {MAX_MESSAGE_BYTES}"
            )
            log.warning(
                "message_dead_lettered", topic=record.topic, offset=record.offset, error=error
            )
            await self.dead_letter(record, error)
            EVENTS_DEADLETTERED.labels(self.group or "ephemeral", record.topic).inc()
        return kept

    async def _handle_batch(self, records: list[ConsumerRecord]) -> Awaitable[int | None] | None:
        assert self._on_batch is not None
        try:
            tail = await self._retrying(records[0], lambda: self._on_batch_call(records))
        except Unavailable:
            raise  # a dependency is down: do not commit, let the service retry or restart
        except Exception as exc:  # noqa: BLE001 - retried record by record, then dead-lettered
            log.warning("batch_failed_retrying_records", records=len(records), error=str(exc))
            for record in records:
                await self._handle(record)
            return None
        EVENTS_HANDLED.labels(self.group or "ephemeral", records[0].topic).inc(len(records))
        return tail

    async def _handle(self, record: ConsumerRecord) -> None:
        consumer = self.group or "ephemeral"
        try:
            if self._on_batch is not None:
                tail = await self._retrying(record, lambda: self._on_batch_call([record]))
                if tail is not None:
                    await tail
            elif self._on_record is not None:
                on_record = self._on_record
                await self._retrying(record, lambda: on_record(record))
            else:
                event = envelope.decode(record.value)
                if event.event_id in self._seen:
                    return
                with structlog.contextvars.bound_contextvars(
                    event_id=event.event_id,
                    correlation_id=event.correlation_id,
                    event_type=event.type,
                ):
                    on_event = self._on_event
                    assert on_event is not None
                    await self._retrying(record, lambda: on_event(event))
                self._remember(event.event_id)
            EVENTS_HANDLED.labels(consumer, record.topic).inc()
        except Unavailable:
            raise  # a dependency is down: do not commit, let the service retry or restart
        except Exception as exc:  # noqa: BLE001 - any handler failure is dead-lettered
            log.warning(
                "message_dead_lettered",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error=str(exc),
                error_type=type(exc).__name__,
            )
            await self.dead_letter(record, f"{type(exc).__name__}: {exc}")
            EVENTS_DEADLETTERED.labels(consumer, record.topic).inc()

    async def _on_batch_call(self, records: list[ConsumerRecord]) -> Awaitable[int | None] | None:
        assert self._on_batch is not None
        return await self._on_batch(records)

    async def _retrying(self, record: ConsumerRecord, call: Callable[[], Awaitable[T]]) -> T:
        """Call a handler, again with backoff while it raises Unavailable, within the budget.

        why: a registry or object-store outage is usually short; crashing the service would
        only restart it into the same outage and drop the in-memory state it had built."""
        deadline = time.monotonic() + self._unavailable_budget_s
        delay = 0.2
        while True:
            try:
                return await call()
            except Unavailable as exc:
                if self._stopping.is_set() or time.monotonic() + delay > deadline:
                    raise
                HANDLER_RETRIES.labels(self.group or "ephemeral", record.topic).inc()
                log.warning(
                    "dependency_unavailable_retrying",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=str(exc),
                    retry_in_s=delay,
                )
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    pass  # backoff elapsed: try again
                delay = min(delay * 2, 5.0)

    async def dead_letter(self, record: ConsumerRecord, error: str) -> None:
        await publish_dead_letter(self._publisher, record, error, self.group)

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > 50_000:
            self._seen.popitem(last=False)


class _SettleBeforeRebalance(ConsumerRebalanceListener):
    """Commits what is done (letting a coalescing handler's held records go first) before a
    rebalance hands partitions to another member, which starts from the committed offsets."""

    def __init__(self, consumer: EventConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._consumer._settle_all(stopping=True)
        for tp in revoked:  # another member may commit them now
            self._consumer._committed.pop(tp, None)
        if self._consumer.on_revoked is not None:
            await self._consumer.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self._consumer.on_assigned is not None:
            await self._consumer.on_assigned(list(assigned))


async def publish_dead_letter(
    publisher: EventPublisher, record: ConsumerRecord, error: str, group: str | None
) -> None:
    """Send a record that could not be handled to driftloop.deadletter, with the error."""
    letter = events_pb2.DeadLetter(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key or b"",
        value=(record.value or b"")[: MAX_MESSAGE_BYTES // 2],
        error=error[:4000],
        consumer_group=group or "",
    )
    await publisher.publish(topics.DEADLETTER, record.topic, publisher.event(letter))
