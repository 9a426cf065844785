"""Offset windows of a public JSON topic: the messages of one partition are coalesced into one
batch per group (a dataset, or a model for labels), cut where only the messages decide.

Pure domain logic: no Kafka here. The adapter feeds each partition's messages in offset order
and publishes what comes out.

Where a group's batch is cut, so that a redelivery cuts (and names) it the same way:
- at window ends: the offsets of a partition fall into windows of `window_offsets`
  ([k*W, (k+1)*W)); the first message of a new window cuts every group of the partition;
- at a group's limits: `max_rows` rows (the raw topic's batch size), `max_bytes` of JSON,
  `max_columns` columns or `max_cells` rows x columns (sparse rows of many shapes make wide,
  mostly-null tables); a message that would pass one is put in a fresh batch;
- when the partition holds `max_held_bytes` of JSON: every group is cut (bounds memory).

These rules depend only on the messages read since the partition was last empty (its *commit
point*: every message before it is in a cut batch or refused, none after it is held). Offsets
are committed only at commit points, so a redelivery starts from one and cuts as before. Two
cuts depend on time instead: the linger (`linger_s` after the partition started holding
messages, so a quiet stream is not delayed) and `flush()`. The adapter lingers only on a
partition whose consumer has caught up (a redelivery being read is cut by the offsets, as the
first time) and flushes only when the consumer would otherwise wait; both leave a commit
point, committed once the batches are acknowledged. Before it publishes what such a cut made,
the adapter records the cut durably: the offset it fell at goes into the metadata of the
partition's committed offset (Kafka keeps it beside the offset), and every later commit
carries it until the committed offset passes it. A reader (re)assigned the partition reads
the metadata back and `replay()`s those cuts, so a redelivery after a crash between a cut
batch's acknowledgement and its commit cuts (and names) it as before, even when more messages
arrived meanwhile. What is left: a broker that drops commit metadata (the embedded broker
does: there such a crash still curates those rows twice), and a cut whose recording failed
while the consumer had to flush anyway; in both cases ids always cover the exact messages, so
an id never stands for other rows and no row is lost.

Batch ids are derived from the topic, the partition, the group, and each message's offset,
timestamp and checksum: a redelivered batch is curated once (validation skips batch ids its
manifest already holds), and a fresh broker reusing offsets does not collide with old ids.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from driftloop.services.ingestion.core.batches import MAX_BATCH_ROWS, MAX_COLUMNS, JsonMessage

T = TypeVar("T")

DEFAULT_WINDOW_OFFSETS = 5000
DEFAULT_LINGER_S = 2.0
"""How long held rows wait for more: at the 67 rows/s of one producer a batch (and a manifest
version) then holds ~130 rows; 500 ms made ~850 versions in 8 minutes, 2 s about 240."""
MAX_BATCH_JSON_BYTES = 4 * 1024 * 1024
MAX_BATCH_CELLS = 1_000_000
"""Rows x columns of one batch: keeps a batch of sparse rows well inside a Kafka message."""
MAX_HELD_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class WindowPolicy:
    """Where the batches of one partition are cut (see the module docstring)."""

    window_offsets: int = DEFAULT_WINDOW_OFFSETS
    max_rows: int = MAX_BATCH_ROWS
    max_bytes: int = MAX_BATCH_JSON_BYTES
    max_columns: int = MAX_COLUMNS
    max_cells: int = MAX_BATCH_CELLS
    max_held_bytes: int = MAX_HELD_BYTES
    linger_s: float = DEFAULT_LINGER_S

    def __post_init__(self) -> None:
        if self.window_offsets < 1 or self.max_rows < 1 or self.linger_s < 0:
            raise ValueError(f"a window policy needs positive sizes and linger: {self}")


@dataclass(frozen=True)
class Piece(Generic[T]):
    """What one message gives one group: its items (rows, labels) and their columns."""

    group: str
    items: list[T]
    columns: frozenset[str] = frozenset()


Parse = Callable[[JsonMessage], list[Piece[T]]]
"""Reads one message into pieces; raises (with a reason for the dead-letter topic) if it is bad."""


@dataclass(frozen=True)
class Bundle(Generic[T]):
    """One group's batch as cut: its id and the items of each message, in offset order."""

    group: str
    batch_id: str
    parts: list[tuple[JsonMessage, list[T]]]

    @property
    def items(self) -> list[T]:
        return [item for _, items in self.parts for item in items]

    @property
    def first_offset(self) -> int:
        return self.parts[0][0].offset


@dataclass(frozen=True)
class Refused:
    """A message that is not read into any batch, and why (it goes to the dead-letter topic)."""

    message: JsonMessage
    error: Exception

    @property
    def reason(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


@dataclass
class Step(Generic[T]):
    """What adding a message (or flushing) cut: batches, refused messages, and the commit point
    reached, if any (the offset from which a redelivery would cut exactly as this run did)."""

    bundles: list[Bundle[T]] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    commit: int | None = None


class _Group(Generic[T]):
    """The held messages of one group, with their size so far and a running id digest."""

    def __init__(self, topic: str, partition: int, group: str) -> None:
        self.name = group
        self.parts: list[tuple[JsonMessage, list[T]]] = []
        self.rows = 0
        self.bytes = 0
        self.columns: set[str] = set()
        self._digest = hashlib.sha256(f"{topic}/{partition}/{group};".encode())

    def fits(self, message: JsonMessage, piece: Piece[T], policy: WindowPolicy) -> bool:
        rows = self.rows + len(piece.items)
        if rows > policy.max_rows or self.bytes + _size(message) > policy.max_bytes:
            return False
        columns = len(self.columns)
        if not piece.columns <= self.columns:
            columns = len(self.columns | piece.columns)
        return columns <= policy.max_columns and rows * columns <= policy.max_cells

    def add(self, message: JsonMessage, piece: Piece[T]) -> None:
        self.parts.append((message, piece.items))
        self.rows += len(piece.items)
        self.bytes += _size(message)
        self.columns |= piece.columns
        crc = zlib.crc32(message.value or b"")
        self._digest.update(f"{message.offset}/{message.timestamp}/{crc};".encode())

    def bundle(self) -> Bundle[T]:
        return Bundle(self.name, f"j{self._digest.hexdigest()[:31]}", self.parts)


class PartitionWindows(Generic[T]):
    """Coalesces the messages of one partition, fed in offset order, into per-group bundles."""

    def __init__(self, topic: str, partition: int, policy: WindowPolicy, parse: Parse[T]) -> None:
        self.topic = topic
        self.partition = partition
        self._policy = policy
        self._parse = parse
        self._groups: dict[str, _Group[T]] = {}
        self._held_bytes = 0
        self._window: int | None = None
        self._next: int | None = None
        self._opened: float | None = None
        self._replayed: list[int] = []

    def replay(self, cuts: list[int]) -> None:
        """Cut again where an earlier run cut by time: before each of these offsets (as read
        from the commit metadata, see the module docstring), whatever is held is cut."""
        self._replayed = sorted(set(cuts))

    @property
    def held(self) -> bool:
        return bool(self._groups)

    @property
    def next_offset(self) -> int | None:
        """The offset after the last message read (None: none read yet)."""
        return self._next

    @property
    def deadline(self) -> float | None:
        """When the linger cuts what the partition holds (None: it holds nothing)."""
        return None if self._opened is None else self._opened + self._policy.linger_s

    def add(self, message: JsonMessage, now: float) -> Step[T]:
        """Read one message (the next offset of the partition) at monotonic time `now`."""
        step: Step[T] = Step()
        window = message.offset // self._policy.window_offsets
        rewound = self._next is not None and message.offset < self._next
        too_much = self._held_bytes + _size(message) > self._policy.max_held_bytes
        replayed = bool(self._replayed) and self._replayed[0] <= message.offset
        while self._replayed and self._replayed[0] <= message.offset:
            self._replayed.pop(0)
        if self._groups and (window != self._window or rewound or too_much or replayed):
            step.bundles.extend(self._cut_all())
            step.commit = message.offset
        self._window = window
        self._next = message.offset + 1
        try:
            pieces = self._parse(message)
        except Exception as exc:  # noqa: BLE001 - any unreadable message is refused, with why
            step.refused.append(Refused(message, exc))
            pieces = []
        for piece in pieces:  # one piece per group: cut the groups this message overflows
            group = self._groups.get(piece.group)
            if group is not None and not group.fits(message, piece, self._policy):
                step.bundles.append(self._cut(piece.group))
        if pieces and not self._groups:
            step.commit = message.offset
        for piece in pieces:
            group = self._groups.get(piece.group)
            if group is None:
                group = self._groups[piece.group] = _Group(self.topic, self.partition, piece.group)
            group.add(message, piece)
            self._held_bytes += _size(message)
            if group.rows >= self._policy.max_rows:
                step.bundles.append(self._cut(piece.group))
        if not self._groups:
            step.commit = message.offset + 1
        elif self._opened is None:
            self._opened = now
        return step

    def flush(self) -> Step[T]:
        """Cut everything held now (linger, shutdown, rebalance): a commit point after the last
        message read."""
        return Step(self._cut_all(), commit=self._next)

    def _cut(self, name: str) -> Bundle[T]:
        group = self._groups.pop(name)
        self._held_bytes -= group.bytes
        if not self._groups:
            self._opened = None
            self._held_bytes = 0
        return group.bundle()

    def _cut_all(self) -> list[Bundle[T]]:
        return [self._cut(name) for name in list(self._groups)]


def _size(message: JsonMessage) -> int:
    return len(message.value or b"")
