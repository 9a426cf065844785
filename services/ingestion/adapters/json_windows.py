"""The `on_batch` handler of a public JSON topic that coalesces messages across polls: each
partition's messages go through the core's offset windows (core/windows.py), cut batches are
published, refused messages dead-lettered, and offsets are committed only at commit points
whose batches the broker has acknowledged.

A poll completes (the future `handle_records` returns resolves) once every message in it is in
an acknowledged batch or dead-lettered; its result is the offset EventConsumer commits instead
of the poll's end: the latest commit point at or before that end. So a redelivery always
starts where the cuts depend on the messages alone.

Time-dependent cuts are kept where they cannot change what a redelivery makes: the linger cuts
a partition only once the consumer has caught up on it (`follow`): while it is behind, which
includes re-reading after a restart, the offsets cut the windows as they did the first time.
Each time-dependent cut (linger, `drain()`) is first recorded in the commit metadata of the
partition (`remember_cuts`: the consumer's `mark` commits the committed offset again, with
`commit_metadata` naming the cuts it has not passed); a partition newly assigned reads them
back and cuts there again. A linger whose cut cannot be recorded (e.g. during a rebalance)
waits and tries again; a `drain()` cuts anyway (the consumer waits for it).
When the consumer stops reading (shutdown, rebalance: `drain(stopping=True)`), held messages
are dropped, not cut: they are uncommitted and read again. Only before the consumer waits at
`max_pending_polls` (`drain()`) are they cut where they stand. If publishing fails, the
partition's pending polls fail with the error and the consumer stops uncommitted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog
from aiokafka import ConsumerRecord, TopicPartition

from driftloop.services.ingestion.core.batches import JsonMessage
from driftloop.services.ingestion.core.windows import (
    Bundle,
    Parse,
    PartitionWindows,
    Refused,
    Step,
    WindowPolicy,
)
from driftloop.shared.bus.consumer import EVENTS_DEADLETTERED, publish_dead_letter
from driftloop.shared.bus.publisher import EventPublisher

log = structlog.get_logger(__name__)

T = TypeVar("T")

Publish = Callable[[Bundle[T]], Awaitable[tuple[list[asyncio.Task[None]], list[Refused]]]]
"""Converts and hands one bundle to the producer: the tasks finish when the broker has it;
messages refused while converting are returned for the dead-letter topic."""
Behind = Callable[[str, int], Awaitable[int]]
"""Records of (topic, partition) already on the broker that the consumer has not handed over."""
Mark = Callable[[str, int, int], Awaitable[None]]
"""Commits (topic, partition)'s committed offset again (the given start offset if there is none
yet) with the consumer's commit metadata of now (EventConsumer.mark); raises if it fails."""
Recall = Callable[[str, int], Awaitable[tuple[int, str] | None]]
"""The committed offset of (topic, partition) and its metadata, None if there is none
(EventConsumer.committed_metadata)."""
CUTS_PREFIX = "driftloop-cuts:"
MAX_METADATA_CHARS = 3000
"""Below Kafka's default offset.metadata.max.bytes (4096)."""
LINGER_PATIENCE = 10
"""A linger that finds the consumer behind on the partition waits (the offsets will cut the
window), at most this many lingers in all."""
RECHECK_S = 0.05


def json_message(record: ConsumerRecord) -> JsonMessage:
    """A raw (non-envelope) message of a public JSON topic, as the core reads it."""
    return JsonMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp,
        key=record.key,
        value=record.value,
    )


def consumer_record(message: JsonMessage) -> ConsumerRecord:
    """The record a JSON message was read from (as the dead-letter topic describes it)."""
    key_size = len(message.key or b"")
    value_size = len(message.value or b"")
    return ConsumerRecord(
        message.topic,
        message.partition,
        message.offset,
        message.timestamp,
        0,
        message.key,
        message.value,
        None,
        key_size,
        value_size,
        (),
    )


@dataclass
class _Partition(Generic[T]):
    windows: PartitionWindows[T]
    polls: deque[tuple[int, asyncio.Future[int]]] = field(default_factory=deque)
    """Polls handed to the consumer and not yet complete: (end offset, future)."""
    cuts: list[int] = field(default_factory=list)
    """Commit points not yet given to a poll (ascending)."""
    acks: list[asyncio.Task[None]] = field(default_factory=list)
    """Sends since the last completion was scheduled."""
    start: int = 0
    """The offset this assignment began reading at (a commit point)."""
    completing: asyncio.Task[BaseException | None] | None = None
    timer: asyncio.TimerHandle | None = None
    error: BaseException | None = None


class WindowedJsonHandler(Generic[T]):
    """Coalesces the messages of every assigned partition of one JSON topic (see module doc)."""

    def __init__(
        self,
        policy: WindowPolicy,
        parse: Parse[T],
        publish: Publish[T],
        *,
        dead_letters: EventPublisher,
        group: str,
    ) -> None:
        """`dead_letters` publishes refused messages to driftloop.deadletter on behalf of the
        consumer group `group`."""
        self._policy = policy
        self._parse = parse
        self._publish = publish
        self._dead_letters = dead_letters
        self._group = group
        self._partitions: dict[tuple[str, int], _Partition[T]] = {}
        self._lock = asyncio.Lock()
        self._lingering: set[asyncio.Task[None]] = set()
        self._behind: Behind | None = None
        self._mark: Mark | None = None
        self._recall: Recall | None = None
        self._time_cuts: dict[tuple[str, int], list[int]] = {}
        """Per partition, the offsets cut by time that the committed offset has not passed."""

    def follow(self, behind: Behind) -> None:
        """Ask `behind` (EventConsumer.behind) before a linger cut: while the consumer has more
        of the partition to hand over (catching up, or reading a redelivery), the window is
        left to be cut by the offsets, as it was the first time; a linger cuts only a partition
        whose stream went quiet."""
        self._behind = behind

    def remember_cuts(self, mark: Mark, recall: Recall) -> None:
        """Record each time-dependent cut (linger, drain) in the committed offset's metadata
        before publishing what it cut (`mark`), and read it back (`recall`) when a partition
        is assigned, so that a redelivery cuts there too (see core/windows.py). Give
        `commit_metadata` as the consumer's `commit_metadata`."""
        self._mark = mark
        self._recall = recall

    def commit_metadata(self, tp: TopicPartition, offset: int) -> str:
        """The metadata to commit with `offset`: the time-dependent cuts after it."""
        key = (tp.topic, tp.partition)
        cuts = [cut for cut in self._time_cuts.get(key, []) if cut > offset]
        self._time_cuts[key] = cuts
        return encode_cuts(cuts)

    async def handle_records(self, records: list[ConsumerRecord]) -> asyncio.Future[int]:
        """One poll of one partition (an EventConsumer `on_batch` handler); never raises."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        async with self._lock:
            part = await self._partition(records[0])
            part.polls.append((records[-1].offset + 1, future))
            if part.error is None:
                try:
                    for record in records:
                        step = part.windows.add(json_message(record), time.monotonic())
                        await self._apply(part, step)
                    self._complete(part)
                except Exception as exc:  # noqa: BLE001 - fails the polls: the consumer stops
                    self._fail(part, exc)
            else:
                self._fail(part, part.error)
            self._arm(part)
        return future

    async def drain(self, stopping: bool = False) -> None:
        """Let go of every partition's held messages (EventConsumer's `on_drain`). `stopping`
        False (the consumer reads on): publish them now. True (it stops reading: shutdown,
        rebalance): drop them and complete the polls at the last commit point, so that the
        messages, uncommitted, are read again and cut where the offsets decide rather than
        where this stop happened to fall."""
        async with self._lock:
            for key, part in list(self._partitions.items()):
                if stopping:
                    del self._partitions[key]  # the next poll starts from the committed offset
                    self._release(part)
                else:
                    await self._flush(part, by_time=False)

    async def _partition(self, first: ConsumerRecord) -> _Partition[T]:
        key = (first.topic, first.partition)
        part = self._partitions.get(key)
        if part is None:
            windows = PartitionWindows(first.topic, first.partition, self._policy, self._parse)
            cuts = await self._recalled_cuts(first.topic, first.partition, first.offset)
            windows.replay(cuts)
            self._time_cuts[key] = cuts  # committed again until the committed offset passes
            # why: a consumer starts reading at a commit point (its committed offset, or the
            # start of the partition), so a poll completing before any cut commits that
            part = self._partitions[key] = _Partition(
                windows, cuts=[first.offset], start=first.offset
            )
        return part

    async def _recalled_cuts(self, topic: str, partition: int, start: int) -> list[int]:
        """The time-dependent cuts an earlier run recorded after `start`, its committed offset."""
        if self._recall is None:
            return []
        try:
            found = await self._recall(topic, partition)
        except Exception as exc:  # noqa: BLE001 - unknown: cut as if none were recorded
            log.warning("commit_metadata_unknown", partition=partition, error=repr(exc))
            return []
        if found is None or found[0] != start:
            return []
        cuts = [cut for cut in decode_cuts(found[1]) if cut > start]
        if cuts:
            log.info("replaying_time_cuts", topic=topic, partition=partition, cuts=cuts)
        return cuts

    async def _record_cut(self, part: _Partition[T]) -> bool:
        """Make the cut about to be made (after the last message read) durable in the commit
        metadata; False if that failed (the cut is then not recorded)."""
        windows = part.windows
        cut = windows.next_offset
        if self._mark is None or cut is None:
            return True
        key = (windows.topic, windows.partition)
        self._time_cuts[key] = sorted({*self._time_cuts.get(key, []), cut})
        try:
            await self._mark(windows.topic, windows.partition, part.start)
        except Exception as exc:  # noqa: BLE001 - e.g. a rebalance: the caller decides
            self._time_cuts[key] = [c for c in self._time_cuts.get(key, []) if c != cut]
            log.warning("time_cut_not_recorded", partition=windows.partition, error=repr(exc))
            return False
        return True

    async def _apply(self, part: _Partition[T], step: Step[T]) -> None:
        refused = list(step.refused)
        for bundle in step.bundles:
            sends, failed = await self._publish(bundle)
            part.acks.extend(sends)
            refused.extend(failed)
        for item in sorted(refused, key=lambda r: r.message.offset):
            log.warning(
                "message_dead_lettered",
                topic=item.message.topic,
                partition=item.message.partition,
                offset=item.message.offset,
                error=str(item.error),
                error_type=type(item.error).__name__,
            )
            record = consumer_record(item.message)
            await publish_dead_letter(self._dead_letters, record, item.reason, self._group)
            EVENTS_DEADLETTERED.labels(self._group, item.message.topic).inc()
        if step.commit is not None:
            part.cuts.append(step.commit)

    def _complete(self, part: _Partition[T]) -> None:
        """Schedule the completion of the polls the latest commit point covers: once every send
        so far (and the completion before) is done, each gets the last commit point within it."""
        if not part.cuts or not part.polls or part.polls[0][0] > part.cuts[-1]:
            return
        covered: list[tuple[asyncio.Future[int], int]] = []
        while part.polls and part.polls[0][0] <= part.cuts[-1]:
            end, future = part.polls.popleft()
            covered.append((future, max(c for c in part.cuts if c <= end)))
        part.cuts = part.cuts[-1:]
        acks, part.acks = part.acks, []
        part.completing = asyncio.ensure_future(_completed(part.completing, acks, covered))

    def _release(self, part: _Partition[T]) -> None:
        if part.timer is not None:
            part.timer.cancel()
            part.timer = None
        if part.error is not None:
            return  # its polls have failed already
        covered = [(future, max(c for c in part.cuts if c <= end)) for end, future in part.polls]
        part.polls.clear()
        acks, part.acks = part.acks, []
        part.completing = asyncio.ensure_future(_completed(part.completing, acks, covered))

    def _fail(self, part: _Partition[T], error: BaseException) -> None:
        if part.error is None:
            log.error(
                "json_partition_failed",
                topic=part.windows.topic,
                partition=part.windows.partition,
                error=repr(error),
            )
        part.error = error
        while part.polls:
            _, future = part.polls.popleft()
            if not future.done():
                future.set_exception(error)

    async def _flush(self, part: _Partition[T], *, by_time: bool) -> bool:
        """Cut what the partition holds; `by_time` (linger): only once the cut is recorded
        (False if it was not: the caller retries). Otherwise (drain: the consumer waits for
        it) the cut is made even if recording it failed."""
        if part.error is not None or not part.windows.held:
            return True
        if not await self._record_cut(part) and by_time:
            return False
        try:
            await self._apply(part, part.windows.flush())
            self._complete(part)
        except Exception as exc:  # noqa: BLE001 - fails the polls: the consumer stops
            self._fail(part, exc)
        return True

    def _arm(self, part: _Partition[T], delay: float | None = None) -> None:
        """Set the linger timer of a partition that holds messages and has none."""
        deadline = part.windows.deadline
        if deadline is None or part.timer is not None or part.error is not None:
            return
        if delay is None:
            delay = max(0.0, deadline - time.monotonic())
        part.timer = asyncio.get_running_loop().call_later(delay, self._linger, part)

    def _linger(self, part: _Partition[T]) -> None:
        part.timer = None
        task = asyncio.ensure_future(self._linger_flush(part))
        self._lingering.add(task)  # at most one per partition: the timer is re-armed after it
        task.add_done_callback(self._lingering.discard)

    async def _linger_flush(self, part: _Partition[T]) -> None:
        async with self._lock:
            windows = part.windows
            if self._partitions.get((windows.topic, windows.partition)) is not part:
                return  # released meanwhile
            deadline, now = windows.deadline, time.monotonic()
            if deadline is not None and deadline <= now:
                patience = deadline + self._policy.linger_s * (LINGER_PATIENCE - 1)
                if now < patience and await self._catching_up(part):
                    self._arm(part, RECHECK_S)
                    return
                if not await self._flush(part, by_time=True):
                    self._arm(part, RECHECK_S)
                    return
            self._arm(part)

    async def _catching_up(self, part: _Partition[T]) -> bool:
        if self._behind is None:
            return False
        try:
            return await self._behind(part.windows.topic, part.windows.partition) > 0
        except Exception as exc:  # noqa: BLE001 - unknown: the linger cuts as if caught up
            log.warning("consumer_lag_unknown", partition=part.windows.partition, error=repr(exc))
            return False


def encode_cuts(cuts: list[int]) -> str:
    """Commit metadata naming time-dependent cuts (the earliest ones, if too many to fit)."""
    if not cuts:
        return ""
    text = CUTS_PREFIX + ",".join(str(cut) for cut in sorted(cuts))
    if len(text) > MAX_METADATA_CHARS:
        log.warning("time_cuts_truncated", cuts=len(cuts))
        text = text[: text.rfind(",", 0, MAX_METADATA_CHARS)]
    return text


def decode_cuts(metadata: str) -> list[int]:
    """The cuts `encode_cuts` named ([] for any other metadata)."""
    if not metadata.startswith(CUTS_PREFIX):
        return []
    try:
        return sorted(int(cut) for cut in metadata[len(CUTS_PREFIX) :].split(",") if cut)
    except ValueError:
        return []


async def _completed(
    previous: asyncio.Task[BaseException | None] | None,
    acks: list[asyncio.Task[None]],
    covered: list[tuple[asyncio.Future[int], int]],
) -> BaseException | None:
    """Resolve the covered polls in order after the previous completion: with their commit
    offset, or with the first send error (which every later completion passes on)."""
    error = None if previous is None else await previous
    results = await asyncio.gather(*acks, return_exceptions=True)
    error = error or next((r for r in results if isinstance(r, BaseException)), None)
    for future, offset in covered:
        if future.done():
            continue
        if error is None:
            future.set_result(offset)
        else:
            future.set_exception(error)
    return error
