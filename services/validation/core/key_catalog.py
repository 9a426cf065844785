"""Each dataset's accepted keys (for unique columns), rebuilt from the curated Parquet files of
its head manifest version whenever the in-memory index is missing or behind: after a restart,
after a failed poll, or when another replica curated. The curated data is the only durable
state, so the keys can never disagree with what was curated.

Blocking (object store I/O): call it from async code through asyncio.to_thread.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import structlog

from driftloop.services.validation.core.keys import DEFAULT_MAX_KEYS, KeyIndex, hash_keys
from driftloop.shared.manifest import DatasetManifest
from driftloop.shared.objectstore import ObjectStore

log = structlog.get_logger(__name__)


class KeyCatalog:
    def __init__(self, store: ObjectStore, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self._store = store
        self._max_keys = max_keys
        self._indexes: dict[str, KeyIndex] = {}

    def for_dataset(
        self, dataset: str, columns: tuple[str, ...], head: DatasetManifest | None
    ) -> KeyIndex:
        """The index of `dataset`'s unique `columns`, consistent with manifest `head`."""
        version = 0 if head is None else head.version
        index = self._indexes.get(dataset)
        if index is not None and index.columns == columns and index.version == version:
            return index
        index = self._rebuild(dataset, columns, head)
        self._indexes[dataset] = index
        return index

    def committed(self, dataset: str, version: int) -> None:
        """The index now accounts for manifest `version` (its keys were just curated)."""
        index = self._indexes.get(dataset)
        if index is not None:
            index.version = version

    def forget(self) -> None:
        """Drop every index (a poll failed: keys of uncurated rows may be in them)."""
        self._indexes.clear()

    def _rebuild(
        self, dataset: str, columns: tuple[str, ...], head: DatasetManifest | None
    ) -> KeyIndex:
        index = KeyIndex(columns, max_keys=self._max_keys)
        if head is None:
            return index
        newest, rows = [], 0
        for f in reversed(head.files):  # the newest files that fit the window
            if rows >= self._max_keys:
                break
            newest.append(f)
            rows += f.rows
        for f in reversed(newest):
            table = pq.read_table(io.BytesIO(self._store.get(f.key)))
            keys = {}
            for column in columns:
                if column not in table.column_names:
                    continue
                values = table.column(column).combine_chunks()
                present = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False), bool)
                keys[column] = hash_keys(values)[present]
            index.add(f.all_batch_ids(), keys)
        index.version = head.version
        log.info(
            "unique_keys_loaded",
            dataset=dataset,
            columns=list(columns),
            files=len(newest),
            rows=rows,
            manifest_version=head.version,
        )
        return index
