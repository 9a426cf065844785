"""Uniqueness of key columns: the keys a dataset has accepted so far, as 64-bit hashes with the
batch that owns each, in bounded memory. Pure: numpy, pandas, Arrow.

Each unique column keeps sorted runs of (hash, owner) merged like a binary counter (O(log n)
runs, O(n log n) total work); a lookup is one binary search per run. An owner is the set of
batch ids of one batch (or of one curated file when rebuilt after a restart), so a batch that
is delivered again finds its own keys and gets the same verdict, not "duplicate" of itself.
Past `max_keys` keys per column the oldest run is forgotten (a documented window: at least the
newest max_keys / 2 keys are always remembered). Integer keys are exact; strings and floats are
hashed (SipHash-2-4 via pandas; a false duplicate needs a 64-bit collision, about 1 in 3.7e19
per pair).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.types as pat
import structlog

log = structlog.get_logger(__name__)

DEFAULT_MAX_KEYS = 10_000_000
"""Keys remembered per unique column (12 bytes each: about 120 MB at the default)."""
NO_OWNER = -1


def hash_keys(values: pa.Array) -> np.ndarray:
    """One uint64 per value (nulls get 0; callers skip them): ints exactly, others hashed."""
    if pat.is_integer(values.type):
        ints = values.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        return np.asarray(ints, dtype=np.int64).view(np.uint64)
    if pat.is_floating(values.type):
        floats = values.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        return pd.util.hash_array(np.asarray(floats, dtype=np.float64))
    return pd.util.hash_array(np.asarray(values.to_numpy(zero_copy_only=False), dtype=object))


@dataclass
class _Run:
    hashes: np.ndarray
    owners: np.ndarray

    def __len__(self) -> int:
        return len(self.hashes)


def _sorted_run(hashes: np.ndarray, owners: np.ndarray) -> _Run:
    order = np.argsort(hashes, kind="stable")
    return _Run(hashes[order], owners[order])


@dataclass
class _Column:
    runs: list[_Run] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(r) for r in self.runs)

    def owners_of(self, hashes: np.ndarray) -> np.ndarray:
        """The owner of each hash, NO_OWNER when unknown."""
        found = np.full(len(hashes), NO_OWNER, dtype=np.int32)
        for run in self.runs:
            pos = np.searchsorted(run.hashes, hashes)
            pos[pos == len(run)] = 0
            hit = (run.hashes[pos] == hashes) if len(run) else np.zeros(len(hashes), bool)
            found = np.where(hit & (found == NO_OWNER), run.owners[pos], found)
        return found

    def add(self, hashes: np.ndarray, owner: int, max_keys: int) -> int:
        """Add a run; merge while the newest run is at least half the one before; forget the
        oldest runs past `max_keys`. Returns how many keys were forgotten."""
        if not len(hashes):
            return 0
        self.runs.append(_sorted_run(hashes, np.full(len(hashes), owner, dtype=np.int32)))
        while len(self.runs) >= 2 and 2 * len(self.runs[-1]) >= len(self.runs[-2]):
            newer, older = self.runs.pop(), self.runs.pop()
            self.runs.append(
                _sorted_run(
                    np.concatenate([older.hashes, newer.hashes]),
                    np.concatenate([older.owners, newer.owners]),
                )
            )
        forgotten = 0
        while len(self.runs) > 1 and self.size > max_keys:
            forgotten += len(self.runs.pop(0))
        return forgotten


class KeyIndex:
    """Keys accepted so far of one dataset's unique columns, and which batch owns each."""

    def __init__(self, columns: tuple[str, ...], *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.columns = columns
        self.max_keys = max_keys
        self.version = 0
        """The manifest version these keys account for (0: nothing curated yet)."""
        self._columns = {c: _Column() for c in columns}
        self._owners: list[frozenset[str]] = []
        self._owner_of: dict[str, int] = {}

    def size(self, column: str) -> int:
        return self._columns[column].size

    def duplicates(self, column: str, batch_id: str, hashes: np.ndarray) -> np.ndarray:
        """True for each hash (rows of one batch, in order) that is a duplicate: accepted
        before by another batch, or equal to an earlier hash of this call."""
        owners = self._columns[column].owners_of(hashes)
        mine = self._owner_of.get(batch_id, NO_OWNER)
        before = (owners != NO_OWNER) & (owners != mine)
        _, first = np.unique(hashes, return_index=True)
        repeated = np.ones(len(hashes), dtype=bool)
        repeated[first] = False
        return before | repeated

    def add(self, batch_ids: list[str], keys: dict[str, np.ndarray]) -> None:
        """Record accepted keys (per column) owned by `batch_ids` (one batch, or the batches of
        one curated file); keys these batches already own are not added twice."""
        owner = self._owner(batch_ids)
        for column, hashes in keys.items():
            target = self._columns[column]
            known = target.owners_of(hashes) == owner
            forgotten = target.add(hashes[~known], owner, self.max_keys)
            if forgotten:
                log.warning("unique_keys_forgotten", column=column, keys=forgotten)

    def _owner(self, batch_ids: list[str]) -> int:
        found = self._owner_of.get(batch_ids[0])
        if found is not None:
            return found
        index = len(self._owners)
        self._owners.append(frozenset(batch_ids))
        for batch_id in batch_ids:
            self._owner_of[batch_id] = index
        return index
