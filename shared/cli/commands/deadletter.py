"""`driftloop deadletter [--topic T] [--limit N] [--json] [--replay [--force]]`: list the messages
consumers dead-lettered (driftloop.deadletter), and optionally publish them again to their sources.

Replay re-publishes each letter's original key and value bytes with a `driftloop-replay-of`
header naming the letter, and records a digest of the message (source topic, key, value) in
<data-dir>/deadletter-replays.json. A message replayed once is not replayed again (it is listed
as replayed; --force overrides), so a message that fails again after its replay lands in the
dead letters a second time but cannot loop. A letter whose value was cut at the dead-letter size
cap is not replayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from driftloop.shared.bus import connection, envelope, topics
from driftloop.shared.bus.connection import KafkaTarget
from driftloop.shared.bus.topics import MAX_MESSAGE_BYTES
from driftloop.shared.cli.partitions import every_partition
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.errors import DriftloopError, Unavailable
from driftloop.shared.settings import CommonSettings, KafkaConnection

TRUNCATED_AT = MAX_MESSAGE_BYTES // 2
REPLAY_HEADER = "driftloop-replay-of"
"""Kafka header on a replayed message: the event id of the dead letter it came from."""
LEDGER = "deadletter-replays.json"
"""EventConsumer.dead_letter keeps at most this many value bytes."""
READ_TIMEOUT = 30.0
console = Console()
err = Console(stderr=True)


@dataclass
class Letter:
    """One dead-lettered message, as read back from driftloop.deadletter."""

    at: str
    event_id: str
    source_topic: str
    partition: int
    offset: int
    consumer_group: str
    error: str
    key: bytes = field(repr=False)
    value: bytes = field(repr=False)
    replayed: bool = False
    """This message (same source topic, key and value) was replayed before."""

    @property
    def truncated(self) -> bool:
        return len(self.value) >= TRUNCATED_AT

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.source_topic.encode(), self.key, self.value):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
        return h.hexdigest()

    def to_json(self) -> dict[str, Any]:
        shown = {k: v for k, v in asdict(self).items() if k not in ("key", "value")}
        return {
            **shown,
            "key": self.key.decode("utf-8", errors="replace"),
            "value_bytes": len(self.value),
            "truncated": self.truncated,
        }


class ReplayLedger:
    """Digests of the messages already replayed, in a JSON file (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._digests = set(json.loads(path.read_text()).get("replayed", []))
        except (FileNotFoundError, json.JSONDecodeError, AttributeError):
            self._digests = set()

    def __contains__(self, letter: Letter) -> bool:
        return letter.digest in self._digests

    def add(self, letter: Letter) -> None:
        self._digests.add(letter.digest)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"replayed": sorted(self._digests)}))
        os.replace(tmp, self.path)

    def mark(self, letters: list[Letter]) -> list[Letter]:
        for letter in letters:
            letter.replayed = letter in self
        return letters


async def read_letters(
    bootstrap: KafkaTarget, *, topic: str = "", limit: int = 0, timeout: float = READ_TIMEOUT
) -> list[Letter]:
    """Every letter on driftloop.deadletter (oldest first), those of source `topic` only when
    given, the newest `limit` when limit > 0. Records that are not envelopes are skipped."""
    kafka = connection.resolve(bootstrap)
    consumer = connection.consumer(
        kafka,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
    )
    try:
        await connection.start(consumer, kafka)
        letters = await _drain(kafka, consumer, timeout)
    except KafkaError as exc:
        raise Unavailable(
            f"cannot read {topics.DEADLETTER} from {kafka.describe()}: {exc}"
        ) from exc
    finally:
        await consumer.stop()
    if topic:
        letters = [letter for letter in letters if letter.source_topic == topic]
    return letters[-limit:] if limit > 0 else letters


async def _drain(
    kafka: KafkaConnection, consumer: AIOKafkaConsumer, timeout: float
) -> list[Letter]:
    tps = await every_partition(kafka, [topics.DEADLETTER])
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    letters: list[Letter] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    drained = False
    while loop.time() < deadline:
        batch = await consumer.getmany(timeout_ms=200)
        for records in batch.values():
            letters.extend(filter(None, (_letter(r.value) for r in records)))
        caught_up = all([await consumer.position(tp) >= ends[tp] for tp in tps])
        # why: the embedded broker's high watermark can point inside the last batch; one more
        # empty poll after reaching it makes sure that batch's later records were read too.
        if caught_up and not batch:
            if drained:
                break
            drained = True
    letters.sort(key=lambda letter: letter.at)
    return letters


def _letter(value: bytes | None) -> Letter | None:
    try:
        event = envelope.decode(value)
    except Exception:  # noqa: BLE001 - not an envelope: nothing we can show or replay
        return None
    if event.WhichOneof("payload") != "dead_letter":
        return None
    d = event.dead_letter
    return Letter(
        at=event.occurred_at.ToJsonString(),
        event_id=event.event_id,
        source_topic=d.source_topic,
        partition=d.partition,
        offset=d.offset,
        consumer_group=d.consumer_group,
        error=d.error,
        key=d.key,
        value=d.value,
    )


async def replay(
    bootstrap: KafkaTarget,
    letters: list[Letter],
    ledger: ReplayLedger | None = None,
    *,
    force: bool = False,
) -> tuple[int, list[Letter]]:
    """Publish each letter's key and value to its source topic, once per message: (published,
    skipped). Skipped: letters whose value was truncated when dead-lettered, and (unless
    `force`) messages the ledger says were replayed before or that this call already sent."""
    producer = await connection.start_producer(
        bootstrap,
        client_id="driftloop-deadletter-replay",
        max_request_size=MAX_MESSAGE_BYTES,
        acks="all",
    )
    skipped: list[Letter] = []
    done: set[str] = set()
    sent = 0
    try:
        for letter in letters:
            again = letter.digest in done or (ledger is not None and letter in ledger)
            if letter.truncated or (again and not force):
                skipped.append(letter)
                continue
            if not letter.source_topic:
                continue
            headers = [(REPLAY_HEADER, letter.event_id.encode())]
            await producer.send_and_wait(
                letter.source_topic, letter.value, key=letter.key or None, headers=headers
            )
            sent += 1
            done.add(letter.digest)
            if ledger is not None:
                ledger.add(letter)
    except KafkaError as exc:
        raise Unavailable(f"replay stopped after {sent} messages: {exc}") from exc
    finally:
        await producer.stop()
    return sent, skipped


def render(out: Console, letters: list[Letter]) -> None:
    table = Table(title=f"dead letters ({len(letters)})")
    for col in ("time", "source", "consumer group", "error", "value bytes", "replayed"):
        table.add_column(col)
    for letter in letters:
        table.add_row(
            letter.at,
            f"{letter.source_topic}[{letter.partition}]@{letter.offset}",
            letter.consumer_group or "-",
            letter.error,
            f"{len(letter.value):,}" + (" (cut)" if letter.truncated else ""),
            "yes" if letter.replayed else "",
        )
    out.print(table)


def command(
    topic: Annotated[str, typer.Option(help="Only letters from this source topic.")] = "",
    limit: Annotated[int, typer.Option(help="Only the newest N letters (0: all).", min=0)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    do_replay: Annotated[
        bool, typer.Option("--replay", help="Publish the listed letters to their source topics.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="With --replay: also messages replayed before.")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="State directory (default ./.driftloop or DRIFTLOOP_DATA_DIR)."
        ),
    ] = None,
) -> None:
    """List dead-lettered messages; with --replay, publish them again to their source topics."""
    common = CommonSettings(data_dir=data_dir) if data_dir else CommonSettings()
    bootstrap = stack.settings_from_endpoints(common).kafka_connection()
    ledger = ReplayLedger(common.data_dir / LEDGER)
    try:
        letters = ledger.mark(asyncio.run(read_letters(bootstrap, topic=topic, limit=limit)))
        sent, skipped = (
            asyncio.run(replay(bootstrap, letters, ledger, force=force)) if do_replay else (0, [])
        )
    except DriftloopError as exc:  # unreachable, or refused credentials
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        report: dict[str, Any] = {"letters": [letter.to_json() for letter in letters]}
        if do_replay:
            report["replayed"] = sent
            report["skipped_truncated"] = sum(x.truncated for x in skipped)
            report["skipped_replayed_before"] = sum(not x.truncated for x in skipped)
        console.print(json.dumps(report), markup=False, highlight=False, soft_wrap=True)
        return
    render(console, letters)
    if do_replay:
        console.print(f"replayed {sent} messages to their source topics")
        cut = sum(x.truncated for x in skipped)
        if cut:
            err.print(f"{cut} letters skipped: their value was cut when dead-lettered")
        if len(skipped) > cut:
            err.print(
                f"{len(skipped) - cut} letters skipped: replayed before (failed again?); "
                "--force replays them anyway"
            )
