"""The most recent numbers of a stream in one numpy array: what a monitor keeps of its labelled
rows (errors, labels, predictions, times), compact because a fleet runs thousands of monitors.

A deque of Python floats costs 32 bytes a value (the float object and its pointer), this 8; it is
allocated lazily (an unused one costs nothing beyond the object) and grows up to `capacity`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


class RecentValues:
    """The latest `capacity` values appended, oldest first (a bounded deque of floats)."""

    __slots__ = ("_values", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values = np.empty(0)

    def extend(self, values: Iterable[float] | np.ndarray) -> None:
        found = np.asarray(values if isinstance(values, np.ndarray) else list(values), float)
        if len(found) == 0:
            return
        if len(found) >= self.capacity:
            self._values = found[-self.capacity :].copy()
        else:
            kept = self._values[max(0, len(self._values) + len(found) - self.capacity) :]
            self._values = np.concatenate([kept, found])

    def values(self) -> np.ndarray:
        """The values, oldest first (a view: do not modify)."""
        return self._values

    def clear(self) -> None:
        self._values = np.empty(0)

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index: int) -> float:
        return float(self._values[index])

    def __iter__(self) -> Iterator[float]:
        return iter(self._values.tolist())

    def __bool__(self) -> bool:
        return len(self._values) > 0
