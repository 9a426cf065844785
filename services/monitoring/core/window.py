"""The live window of one monitored version: its latest logged rows, bounded by count (and by
time), kept compact so that thousands of monitors (a fleet's partitions) cost little.

Pure domain logic over pandas. A fleet's prediction logs are small (the rows of one request that
one partition answered), and each small DataFrame costs kilobytes of bookkeeping on its own, so
chunks are merged into one frame once there are more than MAX_CHUNKS of them (amortised: each row
is copied about window_rows / MAX_CHUNKS times at worst) and when the monitor goes idle.
"""

from __future__ import annotations

import collections

import numpy as np
import pandas as pd

TS = "_ts"
MAX_CHUNKS = 16
"""Chunks kept before they are merged into one frame. One-row chunks cost about 6 kB each (a
300-row window of them: 1.5 MB); a merged 300-row window of ten numeric columns about 30 kB.
A merge costs about 3 ms (pandas concat), so 16 spends ~0.2 ms per log on it where 8 spent
twice that."""


class LiveWindow:
    """The latest `rows` rows appended (whole chunks: up to one chunk more until merged)."""

    def __init__(self, rows: int, seconds: float | None, columns: list[str]) -> None:
        self.rows = rows
        self.seconds = seconds
        """Also bound by time: only rows within this many seconds of the newest are tested."""
        self.columns = columns
        self._chunks: collections.deque[pd.DataFrame] = collections.deque()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def append(self, chunk: pd.DataFrame) -> None:
        """Add rows; the oldest chunks beyond `rows` go. Other columns than the window's are
        dropped when chunks are merged (selecting them from each small chunk costs more than
        the chunk: a pandas take per call)."""
        if len(chunk) == 0:
            return
        self._chunks.append(chunk)
        self._len += len(chunk)
        while self._chunks and self._len - len(self._chunks[0]) >= self.rows:
            self._len -= len(self._chunks.popleft())
        if len(self._chunks) > MAX_CHUNKS:
            self.compact()

    def compact(self) -> None:
        """Merge the chunks into one frame of at most `rows` rows (no row that a test would see
        is lost: tests only see the latest `rows`)."""
        if len(self._chunks) <= 1 and self._len <= self.rows:
            return
        merged = self._merged().tail(self.rows).reset_index(drop=True)
        self._chunks = collections.deque([merged])
        self._len = len(merged)

    def frame(self) -> pd.DataFrame:
        """The rows a drift test sees: the latest `rows`, then those within `seconds` of the
        newest (when set)."""
        if not self._chunks:
            return pd.DataFrame()
        window = self._merged().tail(self.rows)
        if self.seconds is not None and TS in window.columns:
            ts = pd.to_numeric(window[TS], errors="coerce")
            window = window[ts >= ts.max() - self.seconds]
        return window

    def _merged(self) -> pd.DataFrame:
        merged = pd.concat(list(self._chunks), ignore_index=True)
        return merged[[c for c in self.columns if c in merged.columns]]

    def nbytes(self) -> int:
        """Bytes of the rows held (deep: strings included)."""
        return int(sum(c.memory_usage(index=True, deep=True).sum() for c in self._chunks))


def time_span(window: pd.DataFrame, now: float) -> tuple[float, float]:
    """(first, last) logged time of the window's rows; (now, now) without any."""
    if TS not in window.columns:
        return now, now
    ts = pd.to_numeric(window[TS], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ts = ts[np.isfinite(ts)]
    if len(ts) == 0:
        return now, now
    return float(ts.min()), float(ts.max())
