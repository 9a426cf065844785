"""The JSON-topic handler without a broker (a fake producer that records what it is given):
batches and their ids do not depend on where polls were cut, a poll completes with the
offset to commit once its rows are acknowledged, a redelivery from that offset publishes
every row exactly once by batch id, bad messages are dead-lettered, the linger lets a quiet
partition go."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from google.protobuf.message import Message
from support import wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.ingestion.adapters.json_windows import decode_cuts, encode_cuts
from driftloop.services.ingestion.adapters.kafka import JsonTopicHandler, RawBatchPublisher
from driftloop.services.ingestion.adapters.kafka_labels import JsonLabelsHandler, LabelPublisher
from driftloop.shared.bus import envelope, topics
from driftloop.shared.records import ipc_to_table

pytestmark = pytest.mark.unit

LONG = 3600.0
"""A linger no test waits for: batches are cut by windows, limits or drain()."""


class FakeBus:
    """Stands in for EventPublisher: keeps every event; acks complete when `release()`d."""

    producer_name = "test"

    def __init__(self, *, hold: bool = False) -> None:
        self.sent: list[tuple[str, str, envelope.Envelope]] = []
        self._hold = hold
        self._acks: list[asyncio.Future[None]] = []

    def event(self, payload: Message, **_: Any) -> envelope.Envelope:
        return envelope.new_event("test", payload)

    async def enqueue(self, topic: str, key: str, event: envelope.Envelope) -> asyncio.Task[None]:
        self.sent.append((topic, key, event))
        ack = asyncio.get_running_loop().create_future()
        if not self._hold:
            ack.set_result(None)
        self._acks.append(ack)
        return asyncio.ensure_future(ack)

    async def publish(self, topic: str, key: str, event: envelope.Envelope) -> None:
        self.sent.append((topic, key, event))

    def release(self, error: Exception | None = None) -> None:
        for ack in self._acks:
            if not ack.done():
                ack.set_exception(error) if error else ack.set_result(None)

    def batches(self) -> list[events_pb2.RecordBatch]:
        return [e.record_batch for t, _, e in self.sent if t == topics.RECORDS_RAW]

    def letters(self) -> list[events_pb2.DeadLetter]:
        return [e.dead_letter for t, _, e in self.sent if t == topics.DEADLETTER]


def record(offset: int, value: object, key: bytes = b"d", partition: int = 0) -> ConsumerRecord:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return ConsumerRecord(
        topics.INGEST_JSON,
        partition,
        offset,
        1_700_000_000_000,
        0,
        key,
        data,
        None,
        1,
        len(data),
        (),
    )


def handler(bus: FakeBus, **kwargs: Any) -> JsonTopicHandler:
    options = {"batch_rows": 5000, "window_offsets": 100, "linger_s": LONG, **kwargs}
    return JsonTopicHandler(RawBatchPublisher(bus), **options)  # type: ignore[arg-type]


def polls(records: list[ConsumerRecord], sizes: list[int]) -> list[list[ConsumerRecord]]:
    """`records` cut into polls of the given sizes, cycled."""
    out, start, i = [], 0, 0
    while start < len(records):
        out.append(records[start : start + sizes[i % len(sizes)]])
        start += sizes[i % len(sizes)]
        i += 1
    return out


async def feed(
    json_handler: JsonTopicHandler, cut: list[list[ConsumerRecord]], *, drain: bool = True
) -> list[asyncio.Future[int]]:
    futures = [await json_handler.handle_records(poll) for poll in cut]
    if drain:
        await json_handler.drain()
    return futures


async def done(futures: list[asyncio.Future[int]]) -> list[int]:
    return await asyncio.wait_for(asyncio.gather(*futures), 10)


def published(bus: FakeBus) -> dict[str, list[int]]:
    """Batch id -> the `n` of its rows, in order."""
    return {b.batch_id: ipc_to_table(b.arrow_ipc).column("n").to_pylist() for b in bus.batches()}


STREAM = [record(i, {"n": i}, key=b"ab"[i % 2 : i % 2 + 1]) for i in range(450)]


async def test_batches_and_ids_do_not_depend_on_where_polls_were_cut() -> None:
    one, two = FakeBus(), FakeBus()
    await feed(handler(one), polls(STREAM, [7]))
    await feed(handler(two), polls(STREAM, [1, 90, 33, 200]))
    assert published(one) == published(two)
    assert sorted(n for rows in published(one).values() for n in rows) == list(range(450))
    assert len(published(one)) == 10, "two datasets in 5 windows of 100 offsets (one partial)"


async def test_a_poll_completes_with_the_last_commit_point_within_it_once_acked() -> None:
    bus = FakeBus(hold=True)
    json_handler = handler(bus)
    futures = await feed(json_handler, polls(STREAM[:250], [60]), drain=False)
    assert not any(f.done() for f in futures), "nothing is acknowledged yet"
    bus.release()
    await wait_for(lambda: all(f.done() for f in futures[:3]), 10, "polls up to offset 180")
    # polls end at 60, 120, 180, 240, 250; windows were cut at 100 and 200
    assert [f.result() for f in futures[:3]] == [0, 100, 100]
    assert not futures[3].done(), "offsets 200-249 are held until their window is cut"
    await json_handler.drain()
    bus.release()
    assert [await f for f in futures[3:]] == [200, 250]


async def test_a_redelivery_from_the_committed_offset_publishes_every_row_once_by_id() -> None:
    first = FakeBus()
    futures = await feed(handler(first), polls(STREAM, [37]), drain=False)  # then it crashes
    # windows were cut at 100..400: the poll ending at 370 is the last complete one
    committed = await asyncio.wait_for(futures[9], 10)
    assert committed == 300 and not futures[10].done()
    again = FakeBus()
    await feed(handler(again), polls(STREAM[committed:], [11, 150]))
    rows = {**published(first), **published(again)}  # validation keeps one batch per id
    shared = published(first).keys() & published(again).keys()
    assert all(published(first)[b] == published(again)[b] for b in shared)
    assert sorted(n for r in rows.values() for n in r) == list(range(450))


async def test_bad_messages_are_dead_lettered_and_their_neighbours_published() -> None:
    bus = FakeBus()
    cut = [
        [record(0, {"n": 0}), record(1, b"{nope"), record(2, {"n": 2})],
        [record(3, [{"n": 3}, {"n": "mixed"}]), record(4, {"n": 4}), record(5, b"42")],
    ]
    futures = await feed(handler(bus), cut)
    assert await done(futures) == [0, 6]
    assert list(published(bus).values()) == [[0, 2, 4]]
    letters = bus.letters()
    assert [letter.offset for letter in letters] == [1, 5, 3]
    assert [letter.consumer_group for letter in letters] == ["ingestion-json"] * 3
    assert letters[0].error.startswith("InvalidInput: ") and "not valid JSON" in letters[0].error
    assert "mixes types" in letters[2].error and letters[2].value == cut[1][0].value


async def test_the_linger_publishes_a_quiet_partition() -> None:
    bus = FakeBus()
    json_handler = handler(bus, linger_s=0.05)
    [future] = await feed(json_handler, [STREAM[:3]], drain=False)
    assert await asyncio.wait_for(future, 10) == 3
    assert sorted(n for rows in published(bus).values() for n in rows) == [0, 1, 2]


async def test_a_failed_send_fails_the_partition_polls() -> None:
    bus = FakeBus(hold=True)
    json_handler = handler(bus)
    futures = await feed(json_handler, polls(STREAM[:150], [50]))
    bus.release(RuntimeError("broker gone"))
    for future in futures:
        with pytest.raises(RuntimeError, match="broker gone"):
            await future


async def test_partitions_are_windowed_apart() -> None:
    bus = FakeBus()
    cut = [[record(i, {"n": i}, partition=p) for i in range(3)] for p in (0, 1)]
    futures = await feed(handler(bus), cut)
    assert await done(futures) == [3, 3]
    assert len(published(bus)) == 2


async def test_label_messages_are_coalesced_across_polls() -> None:
    bus = FakeBus()
    labels = JsonLabelsHandler(LabelPublisher(bus), linger_s=LONG)  # type: ignore[arg-type]

    def label(offset: int, model: str) -> ConsumerRecord:
        data = json.dumps({"model": model, "request_id": f"r{offset}", "label": 1}).encode()
        return ConsumerRecord(
            topics.LABELS_JSON, 0, offset, 1, 0, None, data, None, 0, len(data), ()
        )

    futures = [await labels.handle_records([label(i, "mn"[i % 2])]) for i in range(6)]
    await labels.drain()
    assert await done(futures) == [0, 0, 0, 0, 0, 6]
    events = [e.label_batch for t, _, e in bus.sent if t == topics.LABELS]
    assert [(e.model, list(e.request_ids)) for e in events] == [
        ("m", ["r0", "r2", "r4"]),
        ("n", ["r1", "r3", "r5"]),
    ]


async def test_stopping_drops_what_is_held_and_commits_the_last_commit_point() -> None:
    bus = FakeBus()
    json_handler = handler(bus)
    futures = await feed(json_handler, polls(STREAM[:250], [60]), drain=False)
    await json_handler.drain(stopping=True)
    # polls end at 60, 120, 180, 240, 250; windows were cut at 100 and 200
    assert await done(futures) == [0, 100, 100, 200, 200]
    assert max(n for rows in published(bus).values() for n in rows) == 199, "200-249 dropped"
    again = FakeBus()  # whoever reads next starts at 200 and cuts the same windows
    await feed(handler(again), polls(STREAM[200:], [13]))
    assert sorted(n for rows in published(again).values() for n in rows) == list(range(200, 450))


async def test_the_linger_waits_while_the_consumer_is_behind() -> None:
    bus = FakeBus()
    json_handler = handler(bus, linger_s=0.05)
    lag = {"behind": 5}
    asked: list[tuple[str, int]] = []

    async def behind(topic: str, partition: int) -> int:
        asked.append((topic, partition))
        return lag["behind"]

    json_handler.follow(behind)
    [future] = await feed(json_handler, [STREAM[:3]], drain=False)
    await wait_for(lambda: len(asked) >= 3, 10, "the linger asking, again and again")
    assert not future.done() and published(bus) == {}
    lag["behind"] = 0
    assert await asyncio.wait_for(future, 10) == 3
    assert asked[0] == (topics.INGEST_JSON, 0)


async def test_a_linger_behind_for_too_long_cuts_anyway() -> None:
    bus = FakeBus()
    json_handler = handler(bus, linger_s=0.02)

    async def behind(topic: str, partition: int) -> int:
        return 1  # e.g. offsets that will never be delivered

    json_handler.follow(behind)
    [future] = await feed(json_handler, [STREAM[:3]], drain=False)
    assert await asyncio.wait_for(future, 10) == 3


class Commits:
    """Stands in for the group's committed offsets and their metadata (EventConsumer.mark and
    committed_metadata), noting what had been published when each mark was made."""

    def __init__(self, bus: FakeBus) -> None:
        self.bus = bus
        self.store: dict[tuple[str, int], tuple[int, str]] = {}
        self.published_at_mark: list[int] = []
        self.fail = False
        self.attempts = 0

    def wire(self, json_handler: JsonTopicHandler) -> None:
        async def mark(topic: str, partition: int, start: int) -> None:
            self.attempts += 1
            if self.fail:
                raise RuntimeError("rebalancing")
            self.published_at_mark.append(len(self.bus.batches()))
            offset = self.store.get((topic, partition), (start, ""))[0]
            tp = TopicPartition(topic, partition)
            self.store[(topic, partition)] = (offset, json_handler.commit_metadata(tp, offset))

        async def recall(topic: str, partition: int) -> tuple[int, str] | None:
            return self.store.get((topic, partition))

        json_handler.remember_cuts(mark, recall)


async def test_a_lingered_cut_is_recorded_first_and_a_redelivery_cuts_there_again() -> None:
    bus = FakeBus()
    commits = Commits(bus)
    first = handler(bus, linger_s=0.05)
    commits.wire(first)
    [future] = await feed(first, [STREAM[:3]], drain=False)
    assert await asyncio.wait_for(future, 10) == 3
    assert commits.published_at_mark == [0], "recorded before anything was published"
    assert commits.store[(topics.INGEST_JSON, 0)] == (0, "driftloop-cuts:3")
    lingered = published(bus)
    # killed before committing 3: the next reader starts at 0 with more messages there
    again = FakeBus()
    second = handler(again)
    commits.wire(second)
    await feed(second, polls(STREAM[:60], [7]))
    redelivered = published(again)
    assert lingered.items() <= redelivered.items(), "the lingered batches, cut and named again"
    assert sorted(n for rows in redelivered.values() for n in rows) == list(range(60))


async def test_the_recorded_cuts_are_committed_until_the_offset_passes_them() -> None:
    json_handler = handler(FakeBus())
    Commits(FakeBus()).wire(json_handler)
    tp = TopicPartition(topics.INGEST_JSON, 0)
    await json_handler.handle_records(STREAM[:3])
    assert json_handler.commit_metadata(tp, 0) == ""
    await json_handler.drain()  # the consumer waits: a cut by time, at 3
    assert json_handler.commit_metadata(tp, 0) == "driftloop-cuts:3"
    assert json_handler.commit_metadata(tp, 3) == ""
    assert json_handler.commit_metadata(tp, 0) == "", "passed: forgotten"


async def test_a_linger_whose_cut_cannot_be_recorded_waits() -> None:
    bus = FakeBus()
    commits = Commits(bus)
    commits.fail = True
    json_handler = handler(bus, linger_s=0.02)
    commits.wire(json_handler)
    [future] = await feed(json_handler, [STREAM[:3]], drain=False)
    await wait_for(lambda: commits.attempts >= 3, 10, "the linger trying, again and again")
    assert not future.done() and published(bus) == {}
    commits.fail = False
    assert await asyncio.wait_for(future, 10) == 3
    assert commits.store[(topics.INGEST_JSON, 0)] == (0, "driftloop-cuts:3")


def test_cuts_metadata_reads_back_what_it_wrote_and_ignores_other_metadata() -> None:
    assert decode_cuts(encode_cuts([7, 3])) == [3, 7]
    assert encode_cuts([]) == "" and decode_cuts("") == []
    assert decode_cuts("someone else's note") == [] and decode_cuts("driftloop-cuts:x") == []
    assert len(encode_cuts(list(range(10**6, 10**6 + 2000)))) <= 3000
