"""A fleet's curated rows grouped by partition, read once per dataset and grown file by file as
new manifest versions arrive; a run filters its partition's rows by manifest and `since` in memory.

Why: a partition's drift run used to re-read the whole dataset (560k rows at 1,000 routes) for
every poll and every run, because new manifest versions arrive every few seconds and the drift
window's start differs per episode. Manifests only ever append files, so the rows read for one
version are a prefix of the next one's: only the new files are read and grouped. Each row keeps
the position of its file in the manifest, so a run sees exactly the files of the version it
pinned (its lineage), even when another worker has grown the snapshot since.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import structlog

from driftloop.shared import fleet, manifest

log = structlog.get_logger(__name__)

DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
"""What the grouped rows of every cached dataset may take together (pandas' own count). 1,000
routes of the fleet bench (560k rows) take about 100 MB; over the bound the least recently used
dataset is dropped, and a dataset bigger than the bound alone is read per run as before."""

COMPACT_AFTER = 16
"""Pieces a partition collects (one per read of new files) before they are joined: a partition
nobody trains keeps a few frames, not one per manifest version."""

UNPARTITIONED = ""
"""Rows without a partition value: they train only the global model."""


@dataclass
class _Piece:
    """One partition's rows, in ingestion order, with the manifest position of each row's file."""

    frames: list[pd.DataFrame] = field(default_factory=list)
    seqs: list[np.ndarray] = field(default_factory=list)

    def compact(self) -> tuple[pd.DataFrame, np.ndarray]:
        if len(self.frames) > 1:
            frame = pd.concat(self.frames, ignore_index=True)
            seq = np.concatenate(self.seqs)
            stamps = frame.get(manifest.INGESTED_AT)
            if stamps is not None and not stamps.is_monotonic_increasing:
                order = np.argsort(stamps.to_numpy(), kind="stable")
                frame = frame.iloc[order].reset_index(drop=True)
                seq = seq[order]
            self.frames, self.seqs = [frame], [seq]
        return self.frames[0], self.seqs[0]

    def count(self, files: int, since: float | None) -> int:
        frame, seq = self.compact()
        return int(_mask(frame, seq, files, since).sum())


def _mask(frame: pd.DataFrame, seq: np.ndarray, files: int, since: float | None) -> np.ndarray:
    keep = seq < files
    if since is not None and manifest.INGESTED_AT in frame.columns:
        keep &= frame[manifest.INGESTED_AT].to_numpy() >= since
    return keep


class PartitionedRows:
    """One dataset's rows grouped by one partition_by, for the manifest files read so far."""

    def __init__(self, dataset: str, columns: tuple[str, ...]) -> None:
        self.dataset = dataset
        self.columns = columns
        self.file_keys: list[str] = []
        self.nbytes = 0
        self._pieces: dict[str, _Piece] = {}
        self._lock = threading.Lock()

    def extends(self, pinned: manifest.DatasetManifest) -> bool:
        """Whether `pinned` lists the files read so far first, in the same order (or is an
        older version: its files are the first of those read)."""
        return all(f.key == k for f, k in zip(pinned.files, self.file_keys, strict=False))

    def add(self, frame: pd.DataFrame, seq: np.ndarray, limit: int) -> None:
        """Group the rows of newly read files (`seq`: each row's file position in the
        manifest); TooLarge when the partitions seen would exceed `limit` (nothing is added)."""
        if frame.empty:
            return
        frame = frame.reset_index(drop=True)
        keys = fleet.partition_keys(frame, self.columns)
        codes, names = pd.factorize(keys, sort=False)
        with self._lock:
            fleet.count_partitions(set(self._pieces) | set(names), self.columns, limit)
            # one take in partition order, then a slice per partition: splitting 500k rows into
            # 1,000 partitions by a boolean mask or label lookup each cost seconds
            order = np.argsort(codes, kind="stable")
            ordered, seq = frame.take(order), seq[order]
            bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(names)))])
            for number, suffix in enumerate(names):
                a, b = int(bounds[number]), int(bounds[number + 1])
                self._append(str(suffix) or UNPARTITIONED, ordered.iloc[a:b], seq[a:b])
            self.nbytes += int(frame.memory_usage(deep=True).sum())

    def _append(self, suffix: str, rows: pd.DataFrame, seq: np.ndarray) -> None:
        piece = self._pieces.setdefault(suffix, _Piece())
        piece.frames.append(rows.reset_index(drop=True))
        piece.seqs.append(seq)
        if len(piece.frames) >= COMPACT_AFTER:
            piece.compact()

    def view(self, pinned: manifest.DatasetManifest) -> PartitionsView:
        return PartitionsView(self, len(pinned.files))

    # read by PartitionsView, under the lock: compaction replaces a partition's pieces
    def _rows(self, suffix: str, files: int, since: float | None) -> pd.DataFrame | None:
        with self._lock:
            piece = self._pieces.get(suffix)
            if piece is None:
                return None
            frame, seq = piece.compact()
        return frame[_mask(frame, seq, files, since)].reset_index(drop=True)

    def _count(self, suffix: str, files: int, since: float | None) -> int:
        with self._lock:
            piece = self._pieces.get(suffix)
            return 0 if piece is None else piece.count(files, since)

    def _suffixes(self) -> list[str]:
        with self._lock:
            return [s for s in self._pieces if s != UNPARTITIONED]


@dataclass(frozen=True)
class PartitionsView:
    """The grouped rows as of one manifest version (its first `files` files)."""

    rows_of: PartitionedRows
    files: int

    def rows(self, suffix: str, since: float | None = None) -> pd.DataFrame:
        """A partition's rows (ingested at/after `since`), in ingestion order; empty when the
        partition has none."""
        found = self.rows_of._rows(suffix, self.files, since)
        return pd.DataFrame() if found is None else found

    def count(self, suffix: str, since: float | None = None) -> int:
        return self.rows_of._count(suffix, self.files, since)

    def frame(self, since: float | None = None) -> pd.DataFrame:
        """Every row (the global model's), in ingestion order."""
        parts = [self.rows(s, since) for s in [*self.rows_of._suffixes(), UNPARTITIONED]]
        parts = [p for p in parts if len(p)]
        if not parts:
            return pd.DataFrame()
        whole = pd.concat(parts, ignore_index=True)
        if manifest.INGESTED_AT in whole.columns:
            whole = whole.sort_values(manifest.INGESTED_AT, kind="stable")
        return whole.reset_index(drop=True)

    def sizes(self) -> dict[str, int]:
        """Partition suffix -> rows in this version."""
        return {s: self.count(s) for s in self.rows_of._suffixes()}

    def eligible(self, min_rows: int) -> list[str]:
        """Partitions with at least `min_rows` rows, largest first (then by name)."""
        sizes = sorted(self.sizes().items(), key=lambda p: (-p[1], p[0]))
        return [s for s, n in sizes if n >= min_rows]


ReadFiles = Callable[[list[manifest.ManifestFile]], tuple[pd.DataFrame, np.ndarray]]
"""Reads manifest files: their rows in file order, and each row's file's index in the list."""


class SnapshotCache:
    """Grouped rows per (dataset, partition_by), least recently used first out, bounded by
    `max_bytes` together. A newer manifest reads only its new files; one that does not extend
    what was read (a rewritten history) is read again from the start."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], PartitionedRows] = OrderedDict()
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self.files_read = 0
        """Files read since start (how the tests see that a file is read once)."""

    def view(
        self,
        pinned: manifest.DatasetManifest,
        columns: tuple[str, ...],
        read: ReadFiles,
        max_partitions: int,
    ) -> PartitionsView:
        key = (pinned.dataset, columns)
        # one reader at a time: a second worker wanting the same files waits for them
        with self._lock:
            rows = self._cache.get(key)
            if rows is None or not rows.extends(pinned):
                rows = PartitionedRows(pinned.dataset, columns)
            start = len(rows.file_keys)
            new = pinned.files[start:]  # none for an older version
            if new:
                frame, positions = read(list(new))
                self.files_read += len(new)
                rows.add(frame, (positions + start).astype(np.int32), max_partitions)
                rows.file_keys.extend(f.key for f in new)
            self._cache[key] = rows
            self._cache.move_to_end(key)
            self._bound()
        return rows.view(pinned)

    def _bound(self) -> None:
        while self._cache and sum(r.nbytes for r in self._cache.values()) > self._max_bytes:
            key, dropped = self._cache.popitem(last=False)
            log.warning(
                "fleet_rows_evicted",
                dataset=key[0],
                mb=round(dropped.nbytes / 2**20, 1),
                max_mb=round(self._max_bytes / 2**20, 1),
            )
