"""Predictions waiting for their labels: the bounded join of logged predictions to labels by
request id, and what its journal records per id.

Pure domain logic (moved out of performance.py; it re-exports these names).
"""

from __future__ import annotations

import collections

import pandas as pd

Pending = tuple[str, str, float]
"""A logged prediction waiting for its label: (version, prediction, logged at)."""
JOINED = "joined"
"""State of a request id whose label joined (remembered so a replayed label is not counted)."""
PendingState = Pending | str | None
"""What the journal records per request id: waiting (Pending), JOINED, or forgotten (None)."""


def as_texts(column: pd.Series) -> list[str]:
    """A logged column's values as text, as `astype(str)` writes them, at a fraction of its
    cost (120 us for two float64s, 1 us this way: a fleet logs a row or two at a time).
    float32 keeps astype (str of the widened float would print its binary expansion)."""
    dtype = column.dtype
    types = pd.api.types
    fast = types.is_object_dtype(dtype) or types.is_string_dtype(dtype) or dtype.kind in "iub"
    if fast or (dtype.kind == "f" and dtype.itemsize == 8):
        return [str(v) for v in column.tolist()]
    return [str(v) for v in column.astype(str).tolist()]


class PredictionJoin:
    """The most recent logged predictions by request id, bounded: labels may come much later,
    but memory must not grow with traffic. The oldest entries are forgotten first.

    It also remembers the ids most recently joined (as many as it holds predictions), so a
    label sent again (a producer's retry, a redelivery) is told apart from a label of an
    unknown request: counted in `duplicates`, and never joined twice.

    With `journal`, every change of an id's state is also appended to `changes` (id, state) in
    the order it happened, for the adapter to write to a changelog and drain; `restore` replays
    such states (the latest per id) after a restart."""

    def __init__(self, capacity: int, *, journal: bool = False) -> None:
        self.capacity = capacity
        self.evicted = 0
        self.duplicates = 0
        self.journal = journal
        self.changes: list[tuple[str, PendingState]] = []
        self._rows: collections.OrderedDict[str, Pending] = collections.OrderedDict()
        self._joined: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def add(
        self, version: str, request_ids: list[str], predictions: list[str], ts: list[float]
    ) -> None:
        """Keep logged predictions; an id already joined is skipped (a replayed log)."""
        for request_id, prediction, at in zip(request_ids, predictions, ts, strict=True):
            if request_id in self._joined:
                continue
            self._rows[request_id] = (version, prediction, at)
            if self.journal:
                self.changes.append((request_id, (version, prediction, at)))
        self._trim_rows()

    def _trim_rows(self) -> None:
        overflow = max(0, len(self._rows) - self.capacity)
        for _ in range(overflow):
            forgotten, _ = self._rows.popitem(last=False)
            if self.journal:
                self.changes.append((forgotten, None))
        self.evicted += overflow

    def _trim_joined(self) -> None:
        for _ in range(len(self._joined) - self.capacity):
            forgotten, _ = self._joined.popitem(last=False)
            if self.journal:
                self.changes.append((forgotten, None))

    def was_joined(self, request_id: str) -> bool:
        """Whether a label already joined this request id (recently)."""
        return request_id in self._joined

    def take(self, request_ids: list[str]) -> list[Pending | None]:
        """(version, prediction, logged at) of each id, removed; None when unknown, evicted or
        joined before (those add to `duplicates`)."""
        hits = []
        for request_id in request_ids:
            hit = self._rows.pop(request_id, None)
            if hit is not None:
                self._joined[request_id] = None
                if self.journal:
                    self.changes.append((request_id, JOINED))
            elif request_id in self._joined:
                self.duplicates += 1
            hits.append(hit)
        self._trim_joined()
        return hits

    def forget(self, request_ids: list[str]) -> None:
        """Drop these ids, waiting or joined (a fleet's index forgot them: see core/fleet.py)."""
        for request_id in request_ids:
            joined = request_id in self._joined
            waiting = self._rows.pop(request_id, None) is not None
            self._joined.pop(request_id, None)
            if (waiting or joined) and self.journal:
                self.changes.append((request_id, None))

    def drain(self) -> list[tuple[str, PendingState]]:
        """The changes recorded since the last drain (oldest first), forgotten here."""
        changes, self.changes = self.changes, []
        return changes

    def restore(self, states: list[tuple[str, PendingState]]) -> None:
        """Replay recorded states (oldest first; the latest per id wins), within capacity.
        Nothing is journalled: these states are already in the changelog."""
        for request_id, state in states:
            self._rows.pop(request_id, None)
            self._joined.pop(request_id, None)
            if state == JOINED:
                self._joined[request_id] = None
            elif isinstance(state, tuple):
                self._rows[request_id] = state
        journal, self.journal = self.journal, False
        try:
            self._trim_rows()
            self._trim_joined()
        finally:
            self.journal = journal
