"""Labels that arrived before their prediction's log: under load the prediction log can lag the
labels, so a monitor holds them (bounded) until the log comes and they join.

Pure domain logic. A fleet's monitor also hands its held labels over to the partition whose log
brings their ids (core/fleet.py).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

EARLY_LABELS = 20_000
"""Labels kept per model while their prediction's log has not arrived (under load it lags)."""


class EarlyLabels:
    """Request id -> label, oldest forgotten first beyond `capacity`."""

    def __init__(self, capacity: int = EARLY_LABELS) -> None:
        self.capacity = capacity
        self.forgotten = 0
        """Labels dropped to make room (an unknown id, or a log that never came)."""
        self._labels: collections.OrderedDict[str, str] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._labels)

    def hold(self, request_id: str, label: str) -> None:
        self._labels[request_id] = label
        while len(self._labels) > self.capacity:
            self._labels.popitem(last=False)
            self.forgotten += 1

    def take(self, request_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """(ids, labels) held for any of these ids, removed, in the given order."""
        if not self._labels:
            return [], []
        found = [(i, self._labels.pop(i)) for i in request_ids if i in self._labels]
        return [i for i, _ in found], [label for _, label in found]
