"""`driftloop deadletter` on the real broker: list dead letters, replay them to their source."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord
from support import wait_for
from typer.testing import CliRunner

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.app import app
from driftloop.shared.cli.commands.deadletter import read_letters, replay

pytestmark = pytest.mark.integration

GARBAGE = b"\x00not json at all\xff"


async def test_a_dead_lettered_message_is_listed_and_replayed_to_its_source(broker: str) -> None:
    await ensure_topics(broker)
    publisher = EventPublisher(broker, "test")
    await publisher.start()
    seen: list[bytes] = []

    async def refuse_garbage(record: ConsumerRecord) -> None:
        seen.append(record.value or b"")
        if record.value == GARBAGE:
            raise ValueError("cannot parse this message")

    consumer = EventConsumer(
        bootstrap=broker,
        group="t-deadletter",
        topic_names=[topics.INGEST_JSON],
        publisher=publisher,
        on_record=refuse_garbage,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 30)
        await publisher.publish_raw(topics.INGEST_JSON, b"ds", GARBAGE)
        await publisher.publish_raw(topics.INGEST_JSON, b"ds", b'{"a": 1}')
        await wait_for(lambda: len(seen) == 2, 20, "both messages consumed")

        letters = await read_letters(broker)
        assert len(letters) == 1
        letter = letters[0]
        assert (letter.source_topic, letter.consumer_group) == (topics.INGEST_JSON, "t-deadletter")
        assert (letter.key, letter.value) == (b"ds", GARBAGE)
        assert "ValueError: cannot parse this message" in letter.error
        assert await read_letters(broker, topic=topics.DRIFT) == []

        sent, skipped = await replay(broker, letters)
        assert (sent, skipped) == (1, [])
        await wait_for(lambda: seen.count(GARBAGE) == 2, 20, "the replayed message consumed")
        # refused again, so it is dead-lettered a second time; --limit 1 keeps the newest
        again = await read_letters(broker)
        assert len(again) == 2
        newest = await read_letters(broker, limit=1)
        assert [x.event_id for x in newest] == [again[-1].event_id]
    finally:
        await consumer.stop()
        await task
        await publisher.stop()


def test_cli_lists_and_replays_as_json(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def seed() -> None:
        await ensure_topics(broker)
        publisher = EventPublisher(broker, "test")
        await publisher.start()
        try:
            letter = events_pb2.DeadLetter(
                source_topic=topics.DRIFT,
                partition=0,
                offset=7,
                key=b"m",
                value=b"cli-garbage",
                error="InvalidInput: not a driftloop Envelope",
                consumer_group="training",
            )
            await publisher.publish(topics.DEADLETTER, topics.DRIFT, publisher.event(letter))
        finally:
            await publisher.stop()

    asyncio.run(seed())
    monkeypatch.setenv("DRIFTLOOP_KAFKA_BOOTSTRAP", broker)
    args = ["deadletter", "--data-dir", str(tmp_path), "--topic", topics.DRIFT, "--json"]
    runner = CliRunner()

    listed = runner.invoke(app, args)
    assert listed.exit_code == 0, listed.output
    report = json.loads(listed.stdout.strip().splitlines()[-1])
    assert [x["value_bytes"] for x in report["letters"]] == [len(b"cli-garbage")]
    assert report["letters"][0]["consumer_group"] == "training"
    assert "replayed" not in report

    replayed = runner.invoke(app, [*args, "--replay"])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout.strip().splitlines()[-1])["replayed"] == 1

    table = runner.invoke(app, ["deadletter", "--data-dir", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert "dead letters" in table.stdout


async def test_a_replayed_message_is_marked_and_not_replayed_again(
    broker: str, tmp_path: Path
) -> None:
    from driftloop.shared.cli.commands.deadletter import REPLAY_HEADER, ReplayLedger

    await ensure_topics(broker)
    publisher = EventPublisher(broker, "test")
    await publisher.start()
    poison = b"\x01always refused " + tmp_path.name.encode()
    headers: list[list[tuple[str, bytes]]] = []

    async def refuse(record: ConsumerRecord) -> None:
        if record.value == poison:
            headers.append(list(record.headers or ()))
            raise ValueError("refused again")

    consumer = EventConsumer(
        bootstrap=broker,
        group="t-replay-mark",
        topic_names=[topics.LABELS],
        publisher=publisher,
        on_record=refuse,
    )
    task = asyncio.create_task(consumer.run())
    ledger = ReplayLedger(tmp_path / "ledger.json")
    try:
        await asyncio.wait_for(consumer.ready.wait(), 30)
        await publisher.publish_raw(topics.LABELS, b"m", poison)
        await wait_for(lambda: len(headers) == 1, 20, "the poison consumed once")
        mine = [x for x in await read_letters(broker, topic=topics.LABELS) if x.value == poison]
        assert len(mine) == 1 and not ledger.mark(mine)[0].replayed

        assert (await replay(broker, mine, ledger))[0] == 1
        await wait_for(lambda: len(headers) == 2, 20, "the replayed poison consumed")
        assert (REPLAY_HEADER, mine[0].event_id.encode()) in headers[1]

        async def twice() -> list | None:
            found = [
                x for x in await read_letters(broker, topic=topics.LABELS) if x.value == poison
            ]
            return found if len(found) == 2 else None

        again = await wait_for(twice, 20, "dead-lettered a second time")
        assert all(x.replayed for x in ReplayLedger(ledger.path).mark(again))
        sent, skipped = await replay(broker, again, ReplayLedger(ledger.path))
        assert (sent, len(skipped)) == (0, 2), "a message replayed once is not replayed again"
        sent, _ = await replay(broker, again[:1], ledger, force=True)
        assert sent == 1
    finally:
        await consumer.stop()
        await task
        await publisher.stop()
